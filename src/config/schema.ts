import { Type, type Static } from '@sinclair/typebox';

/**
 * The server's configuration: one object, validated once at start.
 * The seed's keys (config.py) keep their names and defaults; the rest are AI Farm's.
 * docs/configuration.md is the user-facing copy of this table.
 */
const port = (def: number, description: string) =>
  Type.Integer({ minimum: 0, maximum: 65535, default: def, description });

/** One TRUST_PROXY entry: an IPv4/IPv6 address or CIDR, or one of proxy-addr's names. */
const PROXY_ADDRESS = '([0-9a-fA-F:.]+(/[0-9]{1,3})?|loopback|linklocal|uniquelocal)';

export const DbConfigSchema = Type.Object(
  {
    host: Type.String({ default: 'localhost' }),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    user: Type.String({ default: 'root' }),
    password: Type.String({ default: '' }),
    database: Type.String({ minLength: 1, default: 'ai_farm' }),
    charset: Type.Optional(Type.String()),
    collation: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);
export type DbConfig = Static<typeof DbConfigSchema>;

export const ConfigSchema = Type.Object(
  {
    SERVER_HOST: Type.String({
      default: '0.0.0.0',
      description: 'Address the HTTP API and WebSocket server bind to.',
    }),
    SERVER_PORT: port(8000, 'HTTP API, admin panel and /ws port (0 picks a free port).'),
    WEBSOCKET_PORT: port(8765, 'Dedicated WebSocket port for workers (0 picks a free port).'),
    MODEL_SERVER_PORT: port(5000, 'Model download server port (0 picks a free port).'),
    MAX_CLIENTS: Type.Integer({ minimum: 1, default: 100, description: 'Most connected workers at once.' }),
    MAX_CONNECTIONS_PER_TOKEN: Type.Integer({
      minimum: 1,
      default: 50,
      description:
        'Most WebSocket connections one token may hold at once (never more than MAX_CLIENTS - 1, so another token always finds room); past it the upgrade is refused with 429.',
    }),
    MAX_CONNECTIONS_PER_ADDRESS: Type.Integer({
      minimum: 1,
      default: 50,
      description:
        'Most WebSocket connections from one client address at once (never more than MAX_CLIENTS - 1); past it the upgrade is refused with 429.',
    }),
    REGISTER_TIMEOUT: Type.Number({
      exclusiveMinimum: 0,
      maximum: 300,
      default: 5,
      description: 'Seconds a new WebSocket connection has to send register; past it, closed with 4009.',
    }),
    MAX_TASKS_PER_CLIENT: Type.Integer({
      minimum: 1,
      default: 3,
      description: 'Most tasks running on one worker at once.',
    }),
    CONNECTION_TIMEOUT: Type.Number({
      exclusiveMinimum: 0,
      default: 60,
      description: 'Seconds of silence (no message, no pong) after which a worker is declared gone.',
    }),
    DEFAULT_BATCH_SIZE: Type.Integer({
      minimum: 1,
      default: 32,
      description: 'Batch size when a task names none.',
    }),
    DEFAULT_EPOCHS: Type.Integer({ minimum: 1, default: 10, description: 'Epochs when a task names none.' }),
    CHECKPOINT_FREQUENCY: Type.Integer({
      minimum: 1,
      default: 5,
      description: 'Write a checkpoint every this many rounds (and at the end).',
    }),
    LOG_DIR: Type.String({
      minLength: 1,
      default: 'logs',
      description: 'Folder of server.log, error.log, access.log.',
    }),
    CHECKPOINT_DIR: Type.String({
      minLength: 1,
      default: 'checkpoints',
      description: 'Folder of model checkpoints.',
    }),
    MODEL_CACHE_DIR: Type.String({
      minLength: 1,
      default: 'model_cache',
      description: 'Folder of global models and uploaded updates.',
    }),
    db_config: Type.Union([DbConfigSchema, Type.Null()], {
      default: null,
      description: 'MySQL connection as in the seed; used when DATABASE_URL is not set.',
    }),
    DATA_DIR: Type.String({
      minLength: 1,
      default: './data',
      description: 'Where the embedded SQLite database lives.',
    }),
    DATABASE_URL: Type.String({
      default: '',
      description:
        'mysql://user:pass@host:port/db, or a SQLite file path; empty means DATA_DIR/ai_farm.sqlite.',
    }),
    DB_QUERY_TIMEOUT: Type.Number({
      exclusiveMinimum: 0,
      default: 15,
      description:
        'Seconds a MySQL query may take before its connection is treated as lost (the request answers 503).',
    }),
    REDIS_URL: Type.String({ default: '', description: 'redis://host:port; empty means in-process only.' }),
    REDIS_KEY_PREFIX: Type.String({
      default: 'aifarm:',
      pattern: '^[A-Za-z0-9:_.-]{1,64}$',
      description: 'Prefix of every Redis key and channel; farms sharing one Redis need different ones.',
    }),
    RATE_LIMIT: Type.String({
      default: '60/minute',
      pattern: '^(off|[1-9][0-9]*/(second|minute|hour|day))$',
      description: 'Requests per client address, e.g. "60/minute"; "off" disables.',
    }),
    MAX_AUTH_FAILURES: Type.String({
      default: '20/minute',
      pattern: '^(off|[1-9][0-9]*/(second|minute|hour|day))$',
      description:
        'Failed token checks allowed per client address on the WebSocket upgrade and the model server, e.g. "20/minute"; past it the address gets 429 until the window ends. "off" disables.',
    }),
    TRUST_PROXY: Type.String({
      default: 'off',
      pattern: `^(off|true|[0-9]{1,3}|${PROXY_ADDRESS}( *, *${PROXY_ADDRESS})*)$`,
      description:
        'Proxies whose X-Forwarded-For/-Proto/-Host are believed: "off", "true" (any), a hop count, or addresses and CIDRs separated by commas.',
    }),
    ADMIN_TOKEN: Type.String({
      default: '',
      pattern: '^(afm_[A-Za-z0-9_-]{20,200})?$',
      description:
        'Bootstrap admin API token (afm_ followed by 20+ of A-Z a-z 0-9 _ -); when empty the first start creates one and prints it once.',
    }),
    ADMIN_USERNAME: Type.String({ default: 'admin', description: 'Username of the first admin-panel user.' }),
    ADMIN_PASSWORD: Type.String({
      default: '',
      description:
        'Password of the first admin-panel user; when empty the first start generates and prints one.',
    }),
    ALLOW_ANONYMOUS_CLIENTS: Type.Boolean({
      default: false,
      description: 'UNSAFE: accept workers without a token, identified by client id only (the seed mode).',
    }),
    MAX_MESSAGE_BYTES: Type.Integer({
      minimum: 1024,
      default: 1024 * 1024,
      description: 'Largest WebSocket frame accepted from a worker.',
    }),
    MAX_MESSAGES_PER_SECOND: Type.Integer({
      minimum: 1,
      default: 500,
      description:
        'WebSocket messages one worker may send per second on average (bursts of twice that); past it, closed with 1008.',
    }),
    HEADERS_TIMEOUT: Type.Number({
      exclusiveMinimum: 0,
      default: 30,
      description:
        "Seconds an HTTP client has to send a request's headers (every port); slower senders (slowloris) get 408 and are disconnected.",
    }),
    MAX_BODY_BYTES: Type.Integer({
      minimum: 1024,
      default: 1024 * 1024,
      description: 'Largest JSON body accepted.',
    }),
    MAX_UPLOAD_BYTES: Type.Integer({
      minimum: 1024,
      default: 4 * 1024 * 1024 * 1024,
      description: 'Largest model upload accepted.',
    }),
    MAX_CODE_BYTES: Type.Integer({
      minimum: 1024,
      default: 64 * 1024 * 1024,
      description: 'Largest model-registry version or code bundle accepted, as sent (a file, or a tar.gz).',
    }),
    MAX_CODE_UNPACKED_BYTES: Type.Integer({
      minimum: 1024,
      default: 512 * 1024 * 1024,
      description: 'Largest total size of the files a code archive unpacks to; larger archives are refused.',
    }),
    MAX_CODE_ENTRIES: Type.Integer({
      minimum: 1,
      default: 10000,
      description: 'Most entries (files, folders, links) in one code archive.',
    }),
    UPLOAD_EXPIRY: Type.Number({
      exclusiveMinimum: 0,
      default: 86400,
      description:
        'Seconds a resumable (tus) upload is kept after its last request; then its part is deleted (404).',
    }),
    TORCHSERVE_URL: Type.String({
      default: '',
      description: 'TorchServe management API; when set, finished models are registered there.',
    }),
    LOG_LEVEL: Type.Union(
      ['fatal', 'error', 'warn', 'info', 'debug', 'trace'].map((l) => Type.Literal(l)),
      { default: 'info', description: 'Least severe level written to server.log and the terminal.' },
    ),
  },
  { additionalProperties: false },
);

/** The validated configuration object. */
export type Config = Static<typeof ConfigSchema>;

/** Keys whose values are masked when printed. */
export const SECRET_KEYS: ReadonlySet<string> = new Set(['ADMIN_TOKEN', 'ADMIN_PASSWORD']);

export const CONFIG_KEYS = Object.keys(ConfigSchema.properties) as (keyof Config)[];
