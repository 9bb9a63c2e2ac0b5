import { EventEmitter } from 'node:events';
import type { ServerMessage } from '../api/protocol.js';
import type { TaskStatus } from '../api/tasks.js';

/**
 * What travels between the parts of a server, and between server instances when Redis
 * is configured. Each topic names its message type here, so publishers and subscribers
 * agree at compile time.
 */
export interface BusTopics {
  /** New or re-queued work exists: schedulers wake up. */
  'work.available': { task_id: number };
  /**
   * An intent for a task, decided by a use case (a user's pause, a failure): every instance acts
   * on it. The clients holding the task are told `pause`, `resume` or `stop`; the round
   * coordinator stops, restarts or drops the task's round. See TaskIntent.
   */
  'task.control': { task_id: number; action: TaskIntent };
  /**
   * A task's status, announced by the use case that wrote it (a claim, a user's change, a
   * task settled, completed or failed; `deleted` once its row is gone): every instance's
   * dispatcher acts on it (src/scheduling/follow-status.ts). Never coalesced; announcing a
   * status that did not change is harmless. Publish it with `announceStatus`.
   */
  'task.status': { task_id: number; status: AnnouncedStatus };
  /**
   * News only: a task changed (status, progress). The admin panel shows it; nothing decides
   * on it. Progress news is coalesced per task (src/bus/task-news.ts).
   */
  'task.changed': { task_id: number; status: string; progress?: number };
  /** A client changed (connected, cordoned, utilization). */
  'client.changed': { client_id: string; status?: string; connected?: boolean };
  /**
   * Several instances (src/cluster): a client's socket is now held by `instance_id`; with
   * `settled`, the instance that held it before has finished the claims it had under way.
   */
  'cluster.client': { client_id: string; instance_id: string; settled?: boolean };
  /** A message for the client holding (task, attempt), delivered by whichever instance holds its socket. */
  'cluster.push': { client_id: string; task_id: number; attempt: number; message: ServerMessage };
  /** A rank's lease is given up (missed its round's deadline) by the instance holding it. */
  'cluster.release': { client_id: string; task_id: number; attempt: number; reason: string };
  /** A non-owner instance journaled a training update: the owner folds it in from disk. */
  'training.update': { task_id: number; round: number };
  /** A token was revoked: every instance closes the sockets opened with it (src/ws/revocation.ts). */
  'token.revoked': { token_id: string };
}

/**
 * What is to happen to a task. `pause`, `resume`, `stop` (cancelled or failed): its clients are
 * told, and its round pauses, resumes or ends. `requeue`: back to pending as a whole, its round
 * ends. `delete`: the task is gone, its round and its files with it.
 */
export type TaskIntent = 'pause' | 'resume' | 'stop' | 'requeue' | 'delete';

/** The intents its clients are told of (the `pause`, `resume` and `stop` messages). */
export type ClientOrder = Extract<TaskIntent, 'pause' | 'resume' | 'stop'>;

/** The order a task's clients get for an intent, if any. */
export function clientOrder(intent: TaskIntent): ClientOrder | undefined {
  return intent === 'pause' || intent === 'resume' || intent === 'stop' ? intent : undefined;
}

/** A task's status as `task.status` announces it: `deleted` is the row gone. */
export type AnnouncedStatus = TaskStatus | 'deleted';

export type Topic = keyof BusTopics;

/** Every topic (the compiler checks none is missing), for buses that listen to all (Redis). */
const EVERY_TOPIC: Record<Topic, true> = {
  'work.available': true,
  'task.control': true,
  'task.status': true,
  'task.changed': true,
  'client.changed': true,
  'cluster.client': true,
  'cluster.push': true,
  'cluster.release': true,
  'training.update': true,
  'token.revoked': true,
};
export const TOPICS = Object.keys(EVERY_TOPIC) as readonly Topic[];

/**
 * A task's new status: first to the dispatchers (`task.status`), then as news for the panel
 * (`task.changed`, with the progress when known).
 */
export async function announceStatus(
  bus: Bus,
  taskId: number,
  status: AnnouncedStatus,
  progress?: number,
): Promise<void> {
  await bus.publish('task.status', { task_id: taskId, status });
  await bus.publish('task.changed', {
    task_id: taskId,
    status,
    ...(progress === undefined ? {} : { progress }),
  });
}

/** Publish/subscribe between components; in-process by default, Redis when configured. */
export interface Bus {
  publish<T extends Topic>(topic: T, message: BusTopics[T]): Promise<void>;
  /** Returns the function that unsubscribes. */
  subscribe<T extends Topic>(topic: T, handler: (message: BusTopics[T]) => void): () => void;
  close(): Promise<void>;
}

/** The single-process bus: an event emitter, delivered synchronously. */
export class InProcessBus implements Bus {
  private readonly emitter = new EventEmitter();

  constructor(private readonly onError: (err: unknown) => void = () => {}) {
    // Many subscribers (panel streams) per topic are normal.
    this.emitter.setMaxListeners(0);
  }

  async publish<T extends Topic>(topic: T, message: BusTopics[T]): Promise<void> {
    this.emitter.emit(topic, message);
  }

  subscribe<T extends Topic>(topic: T, handler: (message: BusTopics[T]) => void): () => void {
    const safe = (m: BusTopics[T]) => {
      try {
        handler(m);
      } catch (err) {
        this.onError(err);
      }
    };
    this.emitter.on(topic, safe);
    return () => this.emitter.off(topic, safe);
  }

  async close(): Promise<void> {
    this.emitter.removeAllListeners();
  }
}
