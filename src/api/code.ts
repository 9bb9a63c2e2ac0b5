import { Type, type Static } from '@sinclair/typebox';
import { PageQuery, Timestamp } from './common.js';

/** Names of registered models: letters, digits, `.`, `_`, `-`; no `@` (name@version splits at it). */
export const MODEL_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';
/** Versions: like names, with `+` too (semver build metadata). */
export const MODEL_VERSION_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$';
/** A content digest as the API writes it. */
export const DIGEST_PATTERN = '^sha256:[0-9a-f]{64}$';

export const CodeKindSchema = Type.Union([Type.Literal('file'), Type.Literal('folder')], {
  description: 'file: one source file; folder: a tar.gz of a folder.',
});

export const ModelParams = Type.Object({
  name: Type.String({ pattern: MODEL_NAME_PATTERN, description: 'Model name.' }),
  version: Type.String({ pattern: MODEL_VERSION_PATTERN, description: 'Model version.' }),
});
export type ModelParams = Static<typeof ModelParams>;

export const PushModelQuery = Type.Object({
  kind: Type.Optional(
    Type.Union([Type.Literal('file'), Type.Literal('folder')], {
      description:
        'What the body is; default folder when Content-Type is application/gzip (or x-gzip, x-tar+gzip), else file.',
    }),
  ),
  filename: Type.Optional(
    Type.String({
      pattern: '^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$',
      description: 'The file name of a single-file model (default model.py).',
    }),
  ),
});
export type PushModelQuery = Static<typeof PushModelQuery>;

export const ModelVersion = Type.Object({
  name: Type.String(),
  version: Type.String(),
  digest: Type.String({ description: 'sha256:<hex> of the stored bytes (the file, or the tar.gz).' }),
  kind: CodeKindSchema,
  size: Type.Integer({ description: 'Bytes stored.' }),
  file_name: Type.Union([Type.String(), Type.Null()], { description: 'A single-file model: its name.' }),
  created_by: Type.Union([Type.String(), Type.Null()]),
  created_at: Timestamp,
});
export type ModelVersion = Static<typeof ModelVersion>;

export const TaskUse = Type.Object({ id: Type.Integer(), status: Type.String() });

export const ModelVersionDetail = Type.Intersect([
  ModelVersion,
  Type.Object({
    tasks: Type.Array(TaskUse, {
      description: 'Tasks naming this version, newest first (at most 100; 10 in lists).',
    }),
  }),
]);
export type ModelVersionDetail = Static<typeof ModelVersionDetail>;

export const ListModelsQuery = Type.Object({
  name: Type.Optional(
    Type.String({ pattern: MODEL_NAME_PATTERN, description: 'Only versions of this model.' }),
  ),
  ...PageQuery,
});
export type ListModelsQuery = Static<typeof ListModelsQuery>;

export const CodeBundle = Type.Object({
  digest: Type.String({ description: 'sha256:<hex> of the tar.gz; put it in a task as config.code.digest.' }),
  kind: CodeKindSchema,
  size: Type.Integer(),
  entries: Type.Integer({ description: 'Entries of the archive.' }),
  created_at: Timestamp,
});
export type CodeBundle = Static<typeof CodeBundle>;

export const DigestParams = Type.Object({
  digest: Type.String({ pattern: DIGEST_PATTERN, description: 'sha256:<64 hex>.' }),
});

/** What the original AI Farm's model server answered for a model: the code as text. */
export const ModelCode = Type.Object({
  name: Type.String(),
  version: Type.String(),
  code: Type.String({ description: 'The file, as UTF-8 text.' }),
});

/** The code of a task as the worker reads it from `config.code` (filled in at creation). */
export interface TaskCodeRef {
  digest: string;
  kind: 'file' | 'folder';
  size: number;
  /** A single file's name in the working folder. */
  file_name?: string;
}
