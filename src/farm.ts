import { AuthFailures } from './auth/auth-failures.js';
import { clientAddressOf } from './http/trust-proxy.js';
import type { TokenService } from './auth/token-service.js';
import { clientOrder, type Bus } from './bus/bus.js';
import { InProcessPresence, type LocalClients, type Presence } from './bus/presence.js';
import { Cluster } from './cluster/cluster.js';
import { createInstanceId } from './cluster/instance-id.js';
import { HeartbeatWriter } from './clients/heartbeat-writer.js';
import { recoverRegistry, rememberClient, rememberHardware } from './clients/recovery.js';
import { Registration } from './clients/registration.js';
import { ClientRegistry, type FarmClient } from './clients/registry.js';
import { parseRate } from './config/rate.js';
import type { Config } from './config/schema.js';
import type { Logger } from './observability/logger.js';
import { createMetrics, type FarmMetrics } from './observability/metrics.js';
import { MonitoringService } from './observability/monitoring.js';
import { Dispatcher } from './scheduling/dispatcher.js';
import { followTaskStatus } from './scheduling/follow-status.js';
import { findClient } from './storage/client-repo.js';
import type { Executor } from './storage/executor.js';
import { countTasksByStatus, listPendingIds } from './storage/task-repo.js';
import type { Clock } from './storage/values.js';
import { WriteQueue } from './storage/write-queue.js';
import { LeaseService } from './tasks/lease-service.js';
import { strandedSweepMs, sweepStrandedLeases } from './tasks/stranded-leases.js';
import { RoundCoordinator } from './training/coordinator/coordinator.js';
import { TrainingPaths } from './training/coordinator/paths.js';
import { Gateway } from './ws/gateway.js';
import { Handlers } from './ws/handlers.js';

/** The worker-facing half of the server: registry, dispatcher, leases, gateway. */
export interface Farm {
  registry: ClientRegistry;
  dispatcher: Dispatcher;
  leases: LeaseService;
  gateway: Gateway;
  writes: WriteQueue;
  metrics: FarmMetrics;
  monitoring: MonitoringService;
  /** Rounds of distributed training tasks (src/training). */
  training: RoundCoordinator;
  trainingPaths: TrainingPaths;
  /** Several instances on one database (REDIS_URL set): heartbeats and takeovers; null alone. */
  cluster: Cluster | null;
  /** Which clients are connected farm-wide (this instance's registry, plus Redis when shared). */
  presence: Presence;
  /** Failed token checks per address (MAX_AUTH_FAILURES), shared by the gateway and the model server. */
  authFailures: AuthFailures;
  /** Restores leases and the queue from the database, opens the WebSocket port; returns it. */
  start(): Promise<number>;
  /** Closes sockets, writes pending progress, drains the write queue. */
  stop(): Promise<void>;
}

export function createFarm(d: {
  config: Config;
  db: Executor;
  bus: Bus;
  tokens: TokenService;
  clock: Clock;
  logger: Logger;
  /** Called once a training task's final model is stored (TorchServe registration). */
  onTrainingComplete?: (taskId: number, modelPath: string, digest: string) => Promise<void>;
  /** This process (src/cluster/instance-id.ts); names it in presence. */
  instanceId?: string;
  /** Builds the presence over this instance's connected clients (default: in-process). */
  presence?: (local: LocalClients) => Presence;
}): Farm {
  const logger = d.logger.child({ component: 'farm' });
  const registry = new ClientRegistry();
  const writes = new WriteQueue(d.db, logger);
  // Clients' last_seen and utilization, written for all of them every 2 s rather than per heartbeat.
  const heartbeats = new HeartbeatWriter({ registry, writes, clock: d.clock });
  const countTasks = () => countTasksByStatus(d.db) as Promise<Record<string, number>>;
  const metrics = createMetrics({ tasksByStatus: countTasks, connected: () => registry.connectedCount() });
  const base = { db: d.db, writes, registry, bus: d.bus, clock: d.clock, logger };
  const trainingPaths = new TrainingPaths(d.config.MODEL_CACHE_DIR, d.config.CHECKPOINT_DIR);
  // With Redis, other instances may share the database: take over only what dead ones held.
  const cluster = d.config.REDIS_URL
    ? new Cluster({
        ...base,
        logger: logger.child({ component: 'cluster' }),
        instanceId: d.instanceId ?? createInstanceId(),
        connectionTimeout: d.config.CONNECTION_TIMEOUT,
        maxTasksPerClient: d.config.MAX_TASKS_PER_CLIENT,
      })
    : null;
  const training = new RoundCoordinator({
    ...base,
    ...(cluster ? { ownership: cluster, farm: cluster } : {}),
    maxTasksPerClient: d.config.MAX_TASKS_PER_CLIENT,
    logger: logger.child({ component: 'training' }),
    paths: trainingPaths,
    checkpointFrequency: d.config.CHECKPOINT_FREQUENCY,
    ...(d.onTrainingComplete ? { onComplete: d.onTrainingComplete } : {}),
  });
  const dispatcher = new Dispatcher({
    ...base,
    metrics,
    maxTasksPerClient: d.config.MAX_TASKS_PER_CLIENT,
    training,
    ...(cluster ? { farm: cluster } : {}),
  });
  const leases = new LeaseService({ ...base, dispatcher, training });
  training.releaseRanksWith((lease, reason) => leases.releaseLease(lease, reason));
  dispatcher.releaseLeasesWith((lease, reason) => leases.releaseUndelivered(lease, reason));
  cluster?.attach({ leases, dispatcher, training });
  const registration = new Registration({
    ...base,
    dispatcher,
    leases,
    maxTasksPerClient: d.config.MAX_TASKS_PER_CLIENT,
    ...(cluster ? { adopt: (c: FarmClient) => cluster.adopt(c) } : {}),
  });
  const handlers = new Handlers({ ...base, config: d.config, dispatcher, leases, registration });
  const authFailures = new AuthFailures(parseRate(d.config.MAX_AUTH_FAILURES), d.clock);
  const gateway = new Gateway({
    config: d.config,
    tokens: d.tokens,
    authFailures,
    clientAddress: clientAddressOf(d.config.TRUST_PROXY),
    registry,
    handlers,
    leases,
    clock: d.clock,
    logger,
    metrics,
  });
  const localClients: LocalClients = () => registry.connectedIds();
  const presence = d.presence
    ? d.presence(localClients)
    : new InProcessPresence(d.instanceId ?? 'local', localClients);
  const monitoring = new MonitoringService(registry, metrics, countTasks, presence);
  const unsubscribe: (() => void)[] = [];
  let flusher: NodeJS.Timeout | null = null;
  let pendingSweep: NodeJS.Timeout | null = null;
  let strandedSweep: NodeJS.Timeout | null = null;
  const fail = (what: string) => (err: unknown) => logger.error({ err }, what);

  return {
    registry,
    dispatcher,
    leases,
    gateway,
    writes,
    metrics,
    monitoring,
    training,
    trainingPaths,
    cluster,
    presence,
    authFailures,
    async start() {
      if (cluster) {
        await rememberHardware(d.db, registry);
        await cluster.start();
      } else {
        const restored = await recoverRegistry(d.db, registry, d.clock, d.config.MAX_TASKS_PER_CLIENT);
        if (restored) logger.info({ leases: restored }, 'leases restored; their clients may reconnect');
      }
      unsubscribe.push(
        d.bus.subscribe('task.control', (m) => {
          const order = clientOrder(m.action);
          if (order) void leases.control(m.task_id, order).catch(fail('control failed'));
        }),
        d.bus.subscribe('work.available', (m) => {
          if (m.task_id > 0) void dispatcher.refresh(m.task_id).catch(fail('refresh failed'));
          else dispatcher.schedule();
        }),
        followTaskStatus(d.bus, dispatcher, fail('refresh failed')),
        d.bus.subscribe('client.changed', (m) => {
          const c = registry.get(m.client_id);
          if (!c || m.status === undefined) return;
          void findClient(d.db, m.client_id)
            .then((row) => {
              if (row) c.cordoned = Number(row.cordoned) === 1;
              dispatcher.schedule();
            })
            .catch(fail('client refresh failed'));
        }),
        d.bus.subscribe('client.changed', (m) => {
          if (m.connected !== undefined) void presence.changed(m.client_id);
          // A client of another instance: its hardware counts in unschedulable notes, and a
          // task with several ranks may now be placed across instances.
          if (!cluster || registry.get(m.client_id)?.send) return;
          void rememberClient(d.db, registry, m.client_id)
            .then(() => dispatcher.farmChanged())
            .catch(fail('client refresh failed'));
        }),
        d.bus.subscribe('token.revoked', (m) => {
          gateway.revokeToken(m.token_id);
        }),
      );
      presence.start();
      // Open rounds resume before any client can reconnect and ask for its task.
      await training.start();
      await dispatcher.loadPending();
      flusher = setInterval(() => void leases.flushDirty().catch(fail('progress flush failed')), 1000);
      heartbeats.start(fail('client last_seen flush failed'));
      // Safety net for wake-ups the bus may have lost (Redis away, another instance's
      // message missed): pending tasks this dispatcher does not know are read again.
      pendingSweep = setInterval(() => {
        void sweepPending(d.db, dispatcher).catch(fail('pending sweep failed'));
        // Safety net for news of the other instances' clients lost the same way.
        if (cluster) dispatcher.farmChanged();
      }, PENDING_SWEEP_MS);
      // Safety net for leases no registry holds (a claim that committed as its client left):
      // ended once their client has been connected nowhere for CONNECTION_TIMEOUT.
      let sweeping = false;
      strandedSweep = setInterval(() => {
        if (sweeping) return; // a slow database: no sweeps piling up
        sweeping = true;
        void sweepStrandedLeases({
          db: d.db,
          registry,
          clock: d.clock,
          connectionTimeout: d.config.CONNECTION_TIMEOUT,
          instanceId: cluster?.id ?? null,
          release: (lease, reason) => leases.releaseDetached(lease, reason),
        })
          .catch(fail('stranded-lease sweep failed'))
          .finally(() => (sweeping = false));
      }, strandedSweepMs(d.config.CONNECTION_TIMEOUT));
      return gateway.listen(d.config.SERVER_HOST, d.config.WEBSOCKET_PORT);
    },
    async stop() {
      dispatcher.close();
      if (flusher) clearInterval(flusher);
      if (pendingSweep) clearInterval(pendingSweep);
      if (strandedSweep) clearInterval(strandedSweep);
      for (const u of unsubscribe) u();
      await gateway.close();
      await cluster?.stop();
      await presence.close();
      await training.stop();
      await leases.flushDirty().catch(fail('progress flush failed'));
      await heartbeats.stop().catch(fail('client last_seen flush failed'));
      await writes.close();
    },
  };
}

/** How often pending tasks are looked for in the database, in case a wake-up was lost, ms. */
const PENDING_SWEEP_MS = 5_000;

async function sweepPending(db: Executor, dispatcher: Dispatcher): Promise<void> {
  for (const id of await listPendingIds(db, 1000)) if (!dispatcher.has(id)) await dispatcher.refresh(id);
}
