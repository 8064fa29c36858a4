// How a node's parts start and stop: each part is started in order, once what it
// needs has started, and the parts stop in the reverse order, each bounded in
// time. Parts that others reach later (the HTTP API answers while the node is
// still starting) are looked up by name and answer 503 until they are there.

import type { Logger } from 'pino'
import { MurmurError } from './errors.ts'

interface Started {
  name: string
  stop: () => Promise<unknown>
}

export class Lifecycle<Parts extends object> {
  private readonly parts: Partial<Parts> = {}
  private readonly started: Started[] = []
  private stopping = false

  /** A part that has started; throws the API's 503 while it is not there yet, or once the node stops. */
  get<K extends keyof Parts> (name: K): Parts[K] {
    const part = this.parts[name]
    if (this.stopping) throw new MurmurError('STOPPING', 'the node is stopping; retry on another node', 1, 503)
    if (part === undefined) throw new MurmurError('STARTING', 'the node is still starting; retry in a moment', 1, 503)
    return part
  }

  /**
   * Starts a part (`start` may be absent for one that runs once built) and
   * remembers how to stop it. A part whose start fails is not stopped: the caller
   * stops what started before it.
   */
  async add<K extends keyof Parts> (name: K, part: Parts[K], start?: () => Promise<unknown>, stop?: () => Promise<unknown>): Promise<Parts[K]> {
    if (start !== undefined) await start()
    this.parts[name] = part
    if (stop !== undefined) this.started.push({ name: String(name), stop })
    return part
  }

  /** Remembers how to undo a step that has no part of its own (a lock, a listening socket). */
  onStop (name: string, stop: () => Promise<unknown>): void {
    this.started.push({ name, stop })
  }

  /** Stops every part in the reverse order of its start; a step that fails or takes over `timeoutMs` is logged and skipped. */
  async stop (timeoutMs: number, log: Logger): Promise<void> {
    this.stopping = true
    for (const step of this.started.splice(0).reverse()) {
      await bounded(step.stop(), timeoutMs).catch((err: Error) => { log.warn({ part: step.name, err: err.message }, 'a part did not stop cleanly') })
    }
  }
}

export async function bounded<T> (promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([promise, new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => { reject(new Error(`did not finish within ${ms} ms`)) }, ms)
    })])
  } finally {
    clearTimeout(timer)
  }
}
