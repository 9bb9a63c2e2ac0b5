import { InvalidArgumentError, type Command } from 'commander';
import type { CodeBundle, ModelVersion, ModelVersionDetail } from '../api/code.js';
import type { ApiClient } from '../api/api-client.js';
import { apiAction, printPage, withConnFlags, type Conn } from './api-action.js';
import { packCode } from './code-pack.js';

/** One line per version, for people. */
export function modelLine(m: ModelVersion): string {
  const file = m.file_name ? ` ${m.file_name}` : '';
  return `${m.name}@${m.version} ${m.kind}${file} ${m.size} B ${m.digest.slice(0, 19)} by ${m.created_by ?? '-'} at ${m.created_at}`;
}

const enc = encodeURIComponent;

/** Pushes a file or folder as name@version; what the API answered. */
export async function pushModel(
  api: ApiClient,
  name: string,
  version: string,
  path: string,
  exclude: readonly string[] = [],
): Promise<ModelVersion> {
  const packed = await packCode(path, exclude);
  const query =
    packed.kind === 'file' ? `?kind=file&filename=${enc(packed.fileName ?? 'model.py')}` : '?kind=folder';
  const type = packed.kind === 'file' ? 'application/octet-stream' : 'application/gzip';
  return api.send<ModelVersion>(
    'PUT',
    `/api/models/${enc(name)}/${enc(version)}${query}`,
    packed.bytes,
    type,
  );
}

/** Packs a folder (or takes a .tar.gz) and pushes it as an anonymous bundle; its digest. */
export async function pushBundle(
  api: ApiClient,
  path: string,
  exclude: readonly string[] = [],
): Promise<CodeBundle> {
  const packed = await packCode(path, exclude);
  if (packed.kind !== 'folder') {
    throw new Error(
      `--code takes a folder or a .tar.gz; for one file, push it with 'ai-farm models push' and use --model`,
    );
  }
  return api.send<CodeBundle>('POST', '/api/bundles', packed.bytes, 'application/gzip');
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

/**
 * `ai-farm models push|list|show|rm`: the model registry over the HTTP API. Exit codes as
 * `ai-farm tasks`: 0 done, 1 refused or unreachable, 2 bad flags or an unreadable PATH.
 */
export function modelsCommands(program: Command, setExit: (code: number) => void): void {
  const models = program
    .command('models')
    .description('the model registry: named, immutable versions of model code');
  const withApi = apiAction(setExit);
  /** A subcommand of one version, NAME@VERSION. */
  const onModel = (name: string, what: string) =>
    withConnFlags(models.command(name).description(what).argument('<model>', 'NAME@VERSION', modelRef));

  withConnFlags(
    models
      .command('push')
      .description('push a file or a folder (packed as tar.gz) as NAME@VERSION')
      .argument('<name>', 'model name (letters, digits, . _ -)')
      .argument('<version>', 'version (letters, digits, . _ - +)')
      .argument('<path>', 'a file, a folder, or a .tar.gz of a folder'),
  )
    .option('--exclude <pattern>', 'leave out files matching this .gitignore pattern (repeatable)', collect)
    .action(
      withApi(async (api, name: string, version: string, path: string, f: Conn & { exclude?: string[] }) => {
        let model: ModelVersion;
        try {
          model = await pushModel(api, name, version, path, f.exclude);
        } catch (err) {
          if ((err as { name?: string }).name === 'ApiError') throw err;
          console.error(`error: ${path}: ${(err as Error).message}`);
          return 2;
        }
        console.log(f.json ? JSON.stringify(model, null, 2) : `pushed ${modelLine(model)}`);
      }),
    );

  withConnFlags(models.command('list').description('list model versions, newest first'))
    .option('--name <name>', 'only versions of this model')
    .option('--limit <n>', 'page size (1-500)')
    .option('--offset <n>', 'versions to skip')
    .action(
      withApi(async (api, f: Conn & { name?: string; limit?: string; offset?: string }) => {
        const qs = new URLSearchParams();
        if (f.name) qs.set('name', f.name);
        if (f.limit) qs.set('limit', f.limit);
        if (f.offset) qs.set('offset', f.offset);
        const page = await api.call<{ items: ModelVersion[]; total: number }>(
          'GET',
          `/api/models?${qs.toString()}`,
        );
        printPage(page, f.json, modelLine);
      }),
    );

  onModel('show', 'a version and the tasks using it').action(
    withApi(async (api, ref: string, f: Conn) => {
      const m = await api.call<ModelVersionDetail>('GET', `/api/models/${refPath(ref)}`);
      if (f.json) return console.log(JSON.stringify(m, null, 2));
      console.log(modelLine(m));
      console.log(`  digest: ${m.digest}`);
      const tasks = m.tasks.map((t) => `#${t.id} ${t.status}`).join(', ');
      console.log(`  tasks: ${tasks || 'none'}`);
    }),
  );

  onModel('rm', 'delete a version (refused while an unfinished task uses it)').action(
    withApi(async (api, ref: string, f: Conn) => {
      await api.call<null>('DELETE', `/api/models/${refPath(ref)}`);
      console.log(f.json ? JSON.stringify({ deleted: ref }) : `deleted ${ref}`);
    }),
  );
}

/** Checks a NAME@VERSION argument. */
export function modelRef(value: string): string {
  const at = value.lastIndexOf('@');
  if (at < 1 || at === value.length - 1) throw new InvalidArgumentError('expected NAME@VERSION');
  return value;
}

/** 'name@version' as the path /api/models/{name}/{version}. */
function refPath(ref: string): string {
  const at = ref.lastIndexOf('@');
  return `${enc(ref.slice(0, at))}/${enc(ref.slice(at + 1))}`;
}
