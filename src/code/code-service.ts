import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { Kysely } from 'kysely';
import {
  DIGEST_PATTERN,
  MODEL_NAME_PATTERN,
  MODEL_VERSION_PATTERN,
  type CodeBundle,
  type ListModelsQuery,
  type ModelVersion,
  type ModelVersionDetail,
  type TaskCodeRef,
} from '../api/code.js';
import { isAdmin, type Principal } from '../auth/principal.js';
import { AppError, badRequest, conflict, forbidden } from '../errors.js';
import * as repo from '../storage/code-repo.js';
import type { CodeKind, Database } from '../storage/schema.js';
import { fromDbTime, toDbTime, type Clock } from '../storage/values.js';
import type { StoredModel } from '../training/model-store/serve-file.js';
import type { CodeStore } from './code-store.js';

/** What a push sent: the body and how to read it. */
export interface PushInput {
  body: Readable;
  kind: CodeKind;
  /** A single file's name (default model.py). */
  fileName?: string | undefined;
  contentLength?: number | undefined;
}

/** A task's code, resolved at creation: the config the task keeps and the row linking them. */
export interface ResolvedTaskCode {
  config: Record<string, unknown>;
  link: { digest: string; model: string | null };
}

/** What GET /models/{name}/{version} serves: a file's text, or a folder's archive. */
export type ModelDownload =
  { kind: 'file'; name: string; version: string; code: string } | { kind: 'folder'; file: StoredModel };

const NAME = new RegExp(MODEL_NAME_PATTERN);
const VERSION = new RegExp(MODEL_VERSION_PATTERN);
const DIGEST = new RegExp(DIGEST_PATTERN);

const modelNotFound = (ref: string) =>
  new AppError('model_not_found', `model ${ref} is not in the registry`, 404);

/** Splits 'name@version'; null when it is not one. */
export function parseModelRef(ref: string): { name: string; version: string } | null {
  const at = ref.lastIndexOf('@');
  if (at < 1) return null;
  const name = ref.slice(0, at);
  const version = ref.slice(at + 1);
  return NAME.test(name) && VERSION.test(version) ? { name, version } : null;
}

/** The model registry and anonymous code bundles: push, list, read, delete, and task resolution. */
export class CodeService {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly store: CodeStore,
    private readonly clock: Clock,
  ) {}

  /**
   * Pushes name@version. A version is immutable: the same content again answers the existing
   * version (created false), other content 409 `model_version_exists`.
   */
  async pushModel(
    principal: Principal,
    name: string,
    version: string,
    input: PushInput,
  ): Promise<{ created: boolean; model: ModelVersion }> {
    const received = await this.store.receive(input.body, input.kind, input.contentLength);
    try {
      const fileName = input.kind === 'file' ? (input.fileName ?? 'model.py') : null;
      const existing = await repo.findModelVersion(this.db, name, version);
      if (existing)
        return { created: false, model: this.sameOrConflict(existing, received.digest, fileName) };
      await received.commit();
      const now = toDbTime(this.clock.now(), true);
      const row: repo.ModelVersionRow = {
        name,
        version,
        digest: received.digest,
        kind: input.kind,
        size: received.size,
        file_name: fileName,
        created_by: principal.name,
        created_at: now,
      };
      await repo.insertBundleIfAbsent(this.db, this.bundleRow(received, input.kind, principal, now));
      try {
        await repo.insertModelVersion(this.db, row);
      } catch (err) {
        // The same name@version pushed at the same moment: the first one stands.
        const winner = await repo.findModelVersion(this.db, name, version);
        if (!winner) throw err;
        return { created: false, model: this.sameOrConflict(winner, received.digest, fileName) };
      }
      return { created: true, model: presentModel(row) };
    } finally {
      await received.discard();
    }
  }

  private sameOrConflict(row: repo.ModelVersionRow, digest: string, fileName: string | null): ModelVersion {
    if (row.digest !== digest || row.file_name !== fileName) {
      throw conflict(
        'model_version_exists',
        `${row.name}@${row.version} exists with other content (${row.digest}); versions are immutable, push a new version`,
        { digest: row.digest },
      );
    }
    return presentModel(row);
  }

  private bundleRow(
    r: { digest: string; size: number; entries: number },
    kind: CodeKind,
    principal: Principal,
    now: string,
  ): repo.CodeBundleRow {
    return {
      digest: r.digest,
      kind,
      size: r.size,
      entries: r.entries,
      created_by: principal.name,
      created_at: now,
    };
  }

  /** Pushes an anonymous bundle (the tar.gz of a folder), content-addressed; idempotent. */
  async pushBundle(
    principal: Principal,
    body: Readable,
    contentLength: number | undefined,
  ): Promise<{ created: boolean; bundle: CodeBundle }> {
    const received = await this.store.receive(body, 'folder', contentLength);
    try {
      await received.commit();
      const row = this.bundleRow(received, 'folder', principal, toDbTime(this.clock.now(), true));
      const created = await repo.insertBundleIfAbsent(this.db, row);
      const stored = created ? row : ((await repo.findBundle(this.db, row.digest)) ?? row);
      return { created, bundle: presentBundle(stored) };
    } finally {
      await received.discard();
    }
  }

  /** A page of versions, each with the newest 10 tasks naming it. */
  async list(
    q: ListModelsQuery,
  ): Promise<{ items: ModelVersionDetail[]; total: number; limit: number; offset: number }> {
    const limit = q.limit ?? 50;
    const offset = q.offset ?? 0;
    const { rows, total } = await repo.listModelVersions(this.db, { name: q.name, limit, offset });
    const refs = rows.map((r) => `${r.name}@${r.version}`);
    const uses = await repo.tasksUsingModels(this.db, refs, 10);
    const items = rows.map((r, i) => ({ ...presentModel(r), tasks: uses.get(refs[i] as string) ?? [] }));
    return { items, total, limit, offset };
  }

  async get(name: string, version: string): Promise<ModelVersionDetail> {
    const row = await this.mustFind(name, version);
    const tasks = await repo.tasksUsingModel(this.db, `${name}@${version}`, 100);
    return { ...presentModel(row), tasks };
  }

  /** Deletes a version: its pusher or an admin, and only while no unfinished task names it. */
  async delete(principal: Principal, name: string, version: string): Promise<void> {
    const row = await this.mustFind(name, version);
    if (!isAdmin(principal) && row.created_by !== principal.name) {
      throw forbidden(`${name}@${version} was pushed by another user; only they or an admin may delete it`);
    }
    const live = await repo.tasksUsingModel(this.db, `${name}@${version}`, 20, repo.CODE_IN_USE_STATUSES);
    if (live.length > 0) {
      throw conflict(
        'model_in_use',
        `${name}@${version} is used by unfinished task(s) ${live.map((t) => `#${t.id}`).join(', ')}; cancel or finish them first`,
        { tasks: live.map((t) => t.id) },
      );
    }
    await repo.deleteModelVersion(this.db, name, version);
    // The bytes stay while a task (finished ones too: they may be retried) or another version uses them.
    if (!(await repo.bundleReferenced(this.db, row.digest))) {
      await repo.deleteBundle(this.db, row.digest);
      await this.store.remove(row.digest);
    }
  }

  /** GET /models/{name}/{version}: a single file's text (the original's shape), or the folder's archive. */
  async download(name: string, version: string): Promise<ModelDownload> {
    const row = await this.mustFind(name, version);
    const path = this.store.pathOf(row.digest);
    if (row.kind === 'folder') {
      return { kind: 'folder', file: { path, digest: row.digest, name: `${name}-${version}.tar.gz` } };
    }
    const code = await readFile(path, 'utf8').catch(() => {
      throw new AppError('model_not_found', `the file of ${name}@${version} is missing on the server`, 404);
    });
    return { kind: 'file', name, version, code };
  }

  /** A blob by digest, for workers fetching a task's code. */
  async blob(digest: string): Promise<StoredModel> {
    const row = await repo.findBundle(this.db, digest);
    if (!row) throw new AppError('code_not_found', `no code ${digest} on this server`, 404);
    return {
      path: this.store.pathOf(digest),
      digest,
      name: `${digest.slice(7, 19)}.${row.kind === 'folder' ? 'tar.gz' : 'bin'}`,
    };
  }

  /**
   * A task's config.model ('name@version') or config.code ({digest}) made concrete: config.code
   * becomes {digest, kind, size, file_name?}, which is what workers read. Null when the task
   * names no code. 400 when malformed, 404 when unknown.
   */
  async resolveTaskConfig(config: Record<string, unknown> | undefined): Promise<ResolvedTaskCode | null> {
    if (!config || (config.model === undefined && config.code === undefined)) return null;
    if (config.model !== undefined) {
      if (typeof config.model !== 'string')
        throw badRequest('invalid_model', 'config.model must be "name@version"');
      const ref = parseModelRef(config.model);
      if (!ref) {
        throw badRequest(
          'invalid_model',
          `config.model ${JSON.stringify(config.model)} is not "name@version"`,
        );
      }
      const row = await repo.findModelVersion(this.db, ref.name, ref.version);
      if (!row) throw modelNotFound(config.model);
      const given = codeDigest(config.code);
      if (given !== undefined && given !== row.digest) {
        throw badRequest('invalid_code', `config.code names ${given} but ${config.model} is ${row.digest}`);
      }
      const code: TaskCodeRef = { digest: row.digest, kind: row.kind, size: row.size };
      if (row.file_name) code.file_name = row.file_name;
      return { config: { ...config, code }, link: { digest: row.digest, model: config.model } };
    }
    const digest = codeDigest(config.code);
    if (digest === undefined) {
      throw badRequest('invalid_code', 'config.code must be {"digest": "sha256:<64 hex>"}');
    }
    const row = await repo.findBundle(this.db, digest);
    if (!row) throw new AppError('code_not_found', `no code ${digest} on this server; push it first`, 404);
    const code: TaskCodeRef = { digest, kind: row.kind, size: row.size };
    return { config: { ...config, code }, link: { digest, model: null } };
  }

  private async mustFind(name: string, version: string): Promise<repo.ModelVersionRow> {
    const row = await repo.findModelVersion(this.db, name, version);
    if (!row) throw modelNotFound(`${name}@${version}`);
    return row;
  }
}

/** config.code's digest when it is {digest: 'sha256:<hex>'}; undefined when absent or malformed. */
function codeDigest(code: unknown): string | undefined {
  if (!code || typeof code !== 'object' || Array.isArray(code)) return undefined;
  const d = (code as { digest?: unknown }).digest;
  return typeof d === 'string' && DIGEST.test(d) ? d : undefined;
}

/** The API's view of a stored row: the listed fields as they are, created_at as an ISO time. */
function present<R extends { created_at: string }, K extends keyof R>(
  r: R,
  keys: readonly K[],
): Pick<R, K> & { created_at: string } {
  const out = {} as Pick<R, K>;
  for (const k of keys) out[k] = r[k];
  return { ...out, created_at: fromDbTime(r.created_at) as string };
}

const MODEL_FIELDS = ['name', 'version', 'digest', 'kind', 'size', 'file_name', 'created_by'] as const;
const presentModel = (r: repo.ModelVersionRow): ModelVersion => present(r, MODEL_FIELDS);
const presentBundle = (r: repo.CodeBundleRow): CodeBundle =>
  present(r, ['digest', 'kind', 'size', 'entries'] as const);
