// One murmur node: its data dir, libp2p host, membership and HTTP API,
// assembled in order and stopped in reverse, every step bounded in time.

import { EventEmitter } from 'node:events'
import { join } from 'node:path'
import type { PeerInfo } from '@libp2p/interface'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { NodeRecord } from '../crdt/schema.ts'
import type { StateChange } from '../crdt/state.ts'
import type { MemberEvent } from '../membership/types.ts'
import { type NodeInfo, createApi } from './api.ts'
import type { NodeConfig } from './config.ts'
import { type DataDir, openDataDir, removeRuntime, writeRuntime } from './datadir.ts'
import { MurmurError } from './errors.ts'
import { Executor } from './executor/executor.ts'
import { FaultInjector, type FaultRules } from './faults.ts'
import { type Host, createHost } from './host.ts'
import { MembershipService } from './membership.ts'
import { JobService } from './jobs/service.ts'
import { RECONCILE_DEFAULTS } from './reconcile/decide.ts'
import { Reconciler } from './reconcile/loop.ts'
import { keepOnRestart } from './recovery.ts'
import { TaskRpc } from './rpc.ts'
import { StateService } from './state.ts'

/** Label changes reach membership at most this often (they are in the shared state at once). */
const LABEL_ANNOUNCE_MS = 1_000

export interface RuntimeInfo {
  pid: number
  peerId: string
  addrs: string[]
  apiUrl: string
  startedAt: string
}

export class MurmurNode extends EventEmitter<{ leave: [] }> {
  readonly config: NodeConfig
  readonly log: Logger
  readonly dataDir: DataDir
  readonly host: Host
  readonly membership: MembershipService
  readonly state: StateService
  readonly api: FastifyInstance
  readonly apiUrl: string
  readonly executor: Executor
  readonly reconciler: Reconciler
  readonly jobs: JobService
  readonly rpc: TaskRpc
  readonly startedAt = new Date()
  private stopping: Promise<void> | null = null
  /** Labels as set by flags and later through the API. */
  private labels: Record<string, string>
  private announceTimer: NodeJS.Timeout | null = null
  private pruneTimer: NodeJS.Timeout | null = null
  private lastAnnounce = 0

  private constructor (init: { config: NodeConfig, log: Logger, dataDir: DataDir, host: Host, membership: MembershipService, state: StateService, api: FastifyInstance, apiUrl: string, executor: Executor, reconciler: Reconciler, jobs: JobService, rpc: TaskRpc }) {
    super()
    this.config = init.config
    this.log = init.log
    this.dataDir = init.dataDir
    this.host = init.host
    this.membership = init.membership
    this.state = init.state
    this.api = init.api
    this.apiUrl = init.apiUrl
    this.executor = init.executor
    this.reconciler = init.reconciler
    this.jobs = init.jobs
    this.rpc = init.rpc
    // Labels set through the API survive a restart; flags given again win.
    this.labels = { ...init.state.state.node(init.dataDir.peerId)?.labels, ...init.config.labels }
  }

  /** Starts a node, joins through config.join, and returns once it is a member. */
  static async start (config: NodeConfig, rootLog: Logger): Promise<MurmurNode> {
    const dataDir = await openDataDir(config.dataDir, (key) => peerIdFromPrivateKey(key).toString())
    const log = rootLog.child({ node: dataDir.peerId.slice(-8) })
    const cleanup: Array<() => Promise<unknown>> = [dataDir.release]
    try {
      const faults = config.faultInjection
        ? new FaultInjector({ self: dataDir.peerId, log: log.child({ component: 'faults' }), rules: config.faultRules ?? undefined })
        : undefined
      const host = await createHost({ privateKey: dataDir.privateKey, host: config.host, port: config.port, mdns: config.mdns, dialTimeoutMs: config.dialTimeoutMs, faults })
      let membershipRef: MembershipService | undefined
      // The state database opens before the network: a corrupt one stops the start at once.
      const state = await StateService.open({
        host,
        self: dataDir.peerId,
        dir: join(dataDir.path, 'state'),
        config: config.state,
        log: log.child({ component: 'state' }),
        peers: () => membershipRef?.members().filter((m) => m.state === 'alive' && m.id !== dataDir.peerId).map((m) => m.id) ?? [],
        memberState: (id) => membershipRef?.swim.member(id)?.state,
        faults,
      })
      cleanup.unshift(async () => { await state.stop() })
      const executor = Executor.open({
        nodeId: dataDir.peerId,
        dir: join(dataDir.path, 'tasks'),
        capacity: { cpuMillis: config.cpuMillis, memoryBytes: config.memoryBytes },
        isolation: config.isolation,
        log: log.child({ component: 'executor' }),
      })
      cleanup.unshift(async () => { await executor.close() })
      await Promise.resolve(host.start()).catch((err: Error) => { throw portError(err, '--port', config.port) })
      cleanup.unshift(async () => { await bounded(Promise.resolve(host.stop()), config.stopTimeoutMs) })

      let node: MurmurNode | undefined
      const events = new EventEmitter<{ event: [MemberEvent], state: [StateChange] }>()
      state.on('change', (change) => { events.emit('state', change) })
      // The API listens before the node object exists: until then it answers 503.
      const ready = (): MurmurNode => {
        if (node === undefined) throw new MurmurError('STARTING', 'the node is still starting; retry in a moment', 1, 503)
        return node
      }
      const api = createApi({
        id: dataDir.peerId,
        self: () => ready().info(),
        members: () => ready().membership.members(),
        onMemberEvent: (listener) => {
          events.on('event', listener)
          return () => events.off('event', listener)
        },
        leave: () => { ready().emit('leave') },
        state: () => state.info(),
        stateNodes: () => state.state.nodes(),
        compareState: async (peer) => await state.compare(peer),
        onStateChange: (listener) => {
          events.on('state', listener)
          return () => events.off('state', listener)
        },
        updateLabels: async (set, remove) => await ready().updateLabels(set, remove),
        tasks: () => executor.list(),
        readTaskLogs: async (id, stream, opts) => await executor.readLogs(id, stream, opts),
        followTaskLogs: (id, stream, opts) => executor.followLogs(id, stream, opts),
        jobs: () => ready().jobs,
        status: async () => {
          const n = ready()
          const members = n.membership.members()
          return await n.jobs.status(members, members.filter((m) => m.meta.isolation === 'none' && (m.state === 'alive' || m.state === 'suspect')).map((m) => m.id))
        },
        jobRecord: (id) => state.state.job(id),
        taskRecords: (id) => state.state.taskClaims(id),
        faults: faults === undefined ? undefined : {
          get: () => faults.view(),
          set: (rules: FaultRules) => {
            // A partition closes what is open: the gater only stops new connections.
            for (const peer of faults.set(rules)) {
              void host.hangUp(peerIdFromString(peer)).catch((err: Error) => { log.debug({ peer, err: err.message }, 'could not close the connection to a blocked peer') })
            }
            return faults.view()
          },
        },
      }, log)
      await api.listen({ host: config.apiHost, port: config.apiPort }).catch((err: Error) => { throw portError(err, '--api-port', config.apiPort) })
      cleanup.unshift(async () => { await api.close() })
      const address = api.server.address()
      const apiPort = typeof address === 'object' && address !== null ? address.port : config.apiPort
      const apiUrl = `http://${config.apiHost.includes(':') ? `[${config.apiHost}]` : config.apiHost}:${apiPort}`

      const membership = new MembershipService({
        host,
        config: config.membership,
        meta: { cpuMillis: config.cpuMillis, memoryBytes: config.memoryBytes, labels: { ...state.state.node(dataDir.peerId)?.labels, ...config.labels }, apiUrl, isolation: executor.isolation.kind },
        tickMs: config.tickMs,
        dialTimeoutMs: config.dialTimeoutMs,
        log: log.child({ component: 'membership' }),
        faults,
      })
      membership.on('event', (event) => {
        logMemberEvent(log, event, membership.swim.health)
        events.emit('event', event)
      })
      membershipRef = membership
      await membership.start()
      cleanup.unshift(async () => { await membership.stop() })
      await state.start()
      const reconciler = new Reconciler({
        self: dataDir.peerId,
        state,
        executor,
        members: () => membership.members(),
        log: log.child({ component: 'reconcile' }),
        config: {
          // "Recently stable": a dead member counts towards the majority for as long as membership remembers it.
          stableWindowMs: config.membership.deadRetentionMs,
          // A missed cron tick is caught up only while its run's records are surely still in the state.
          cronCatchUpMs: Math.min(RECONCILE_DEFAULTS.cronCatchUpMs, config.state.taskRetentionMs / 2),
          ...config.reconcile,
        },
      })
      cleanup.unshift(async () => { await reconciler.close() })
      let jobsRef: JobService | undefined
      const rpc = new TaskRpc(host, {
        logs: async (req, signal) => await jobsRef!.localLogs(req, signal),
        usage: (tasks) => jobsRef!.localUsage(tasks),
        kill: async (task) => { reconciler.kill(task) },
      }, log.child({ component: 'rpc' }), faults)
      await rpc.start()
      cleanup.unshift(async () => { await rpc.stop() })
      const jobs = jobsRef = new JobService({ self: dataDir.peerId, state, reconciler, executor, rpc, log: log.child({ component: 'jobs' }) })
      node = new MurmurNode({ config, log, dataDir, host, membership, state, api, apiUrl, executor, reconciler, jobs, rpc })

      if (config.mdns) host.addEventListener('peer:discovery', (evt: CustomEvent<PeerInfo>) => { node!.discovered(evt.detail) })
      if (config.join.length > 0) {
        log.info({ join: config.join }, 'joining')
        await membership.join(config.join, config.joinTimeoutMs).catch((err: Error) => {
          throw new MurmurError('JOIN_FAILED', `could not join the cluster: ${err.message}; check the address and that a node runs there`)
        })
        await node.initialSync()
      }
      // After a --reset-state, the labels set earlier come back from the cluster's copy of our record.
      node.adoptStoredLabels()
      await node.writeOwnRecord()
      // Only now, with the cluster's view of what this node should run, is the previous life judged.
      await node.recoverTasks()
      // From here on this node acts on the cluster's jobs: it has synced, and judged its previous life.
      reconciler.start((listener) => {
        const onMember = (): void => { listener() }
        state.on('change', listener)
        membership.on('event', onMember)
        return () => { state.off('change', listener); membership.off('event', onMember) }
      })
      state.on('change', (change) => { node!.guardOwnRecord(change) })
      await writeRuntime(dataDir.path, node.runtime())
      log.info({ peerId: dataDir.peerId, addrs: node.runtime().addrs, api: apiUrl }, 'node started')
      return node
    } catch (err) {
      for (const step of cleanup) await step().catch(() => {})
      throw err
    }
  }

  info (): NodeInfo {
    return {
      id: this.dataDir.peerId,
      addrs: this.host.getMultiaddrs().map((a) => a.toString()),
      apiUrl: this.apiUrl,
      profile: this.config.profile,
      startedAt: this.startedAt.toISOString(),
      health: this.membership.swim.health,
      isolation: this.executor.isolation,
      tasks: this.executor.committed(),
      reconcile: { ...this.reconciler.stats, majority: this.reconciler.majority },
      membership: { ...this.membership.stats, config: this.config.membership },
      process: {
        pid: process.pid,
        rssBytes: process.memoryUsage.rss(),
        heapUsedBytes: process.memoryUsage().heapUsed,
        uptimeMs: Date.now() - this.startedAt.getTime(),
      },
    }
  }

  /** After joining: one round of anti-entropy with a member, so the node starts with the cluster's state. */
  private async initialSync (): Promise<void> {
    const started = performance.now()
    for (const member of this.membership.members()) {
      if (member.id === this.dataDir.peerId || member.state !== 'alive') continue
      const result = await this.state.syncWith(member.id, 'start')
      if (result.ok) {
        this.log.info({ peer: member.id, ms: Math.round(performance.now() - started), received: result.receivedBytes, ...this.state.state.counts() }, 'state synced with the cluster')
        return
      }
    }
    this.log.warn('could not sync the state with any member yet; it will arrive by gossip and anti-entropy')
  }

  /** Adopts the tasks of the previous life that the cluster still assigns here, stops the rest, removes strays. */
  private async recoverTasks (): Promise<void> {
    const self = this.dataDir.peerId
    const report = await this.executor.recover((task) => keepOnRestart(this.state.state, self, task))
    // Ended tasks keep their logs for the task retention, then go (each holds two open files).
    const retention = this.config.state.taskRetentionMs
    this.pruneTimer = setInterval(() => {
      this.executor.prune(Date.now() - retention).then((pruned) => {
        if (pruned.length > 0) this.log.info({ tasks: pruned.length }, 'removed ended tasks past their retention')
      }, (err: Error) => { this.log.warn({ err: err.message }, 'could not remove ended tasks') })
    }, Math.min(retention, 60_000)).unref()
    const found = report.adopted.length + report.stopped.length + report.ended.length + report.strays.length
    if (found > 0) this.log.info({ ...report }, `previous life: ${report.adopted.length} tasks adopted, ${report.stopped.length} stopped, ${report.ended.length} had ended, ${report.strays.length} strays removed`)
  }

  private adoptStoredLabels (): void {
    const labels = { ...this.state.state.node(this.dataDir.peerId)?.labels, ...this.config.labels }
    if (JSON.stringify(labels) === JSON.stringify(this.labels)) return
    this.labels = labels
    this.announceLabels()
  }

  /**
   * Membership carries the labels too, but every change there is a new
   * incarnation gossiped to all: changes within a second go out as one. The
   * shared state, written before this, is the record of truth.
   */
  private announceLabels (): void {
    if (this.announceTimer !== null) return
    const announce = (): void => {
      this.lastAnnounce = Date.now()
      this.announceTimer = null
      if (this.stopping !== null) return
      this.membership.updateMeta({ cpuMillis: this.config.cpuMillis, memoryBytes: this.config.memoryBytes, labels: this.labels, apiUrl: this.apiUrl, isolation: this.executor.isolation.kind })
    }
    const wait = this.lastAnnounce + LABEL_ANNOUNCE_MS - Date.now()
    if (wait <= 0) announce()
    else this.announceTimer = setTimeout(announce, wait)
  }

  private ownRecord (): NodeRecord {
    return {
      id: this.dataDir.peerId,
      addrs: this.host.getMultiaddrs().map((a) => a.toString()).slice(0, 16),
      apiUrl: this.apiUrl,
      cpuMillis: this.config.cpuMillis,
      memoryBytes: this.config.memoryBytes,
      labels: this.labels,
      startedAt: this.startedAt.getTime(),
      updatedAt: Date.now(),
    }
  }

  private async writeOwnRecord (): Promise<void> {
    await this.state.write((s) => { s.setNode(this.ownRecord()) })
  }

  /**
   * Only this node writes its record. If another copy wins (a reset data dir
   * whose old record was still in the cluster), write it again.
   */
  private guardOwnRecord (change: StateChange): void {
    if (change.local || change.kind !== 'nodes' || !change.ids.includes(this.dataDir.peerId) || this.stopping !== null) return
    const stored = this.state.state.node(this.dataDir.peerId)
    const wanted = this.ownRecord()
    if (stored !== undefined && stored.startedAt === wanted.startedAt && JSON.stringify(stored.labels) === JSON.stringify(wanted.labels)) return
    queueMicrotask(() => {
      this.writeOwnRecord().catch((err: Error) => { this.log.warn({ err: err.message }, 'could not rewrite this node\'s record') })
    })
  }

  /** Sets and removes labels: in the shared state (stored before this resolves) and in membership. */
  async updateLabels (set: Record<string, string>, remove: string[]): Promise<Record<string, string>> {
    const labels = { ...this.labels, ...set }
    for (const key of remove) delete labels[key]
    if (Object.keys(labels).length > 64) throw new MurmurError('TOO_MANY_LABELS', `a node has at most 64 labels; this would make ${Object.keys(labels).length}`, 2)
    // Set before the write and kept if it fails: the document holds the change either
    // way (the error says it may take effect), and a concurrent change builds on it.
    this.labels = labels
    await this.writeOwnRecord()
    this.announceLabels()
    this.log.info({ labels }, 'labels changed')
    return labels
  }

  runtime (): RuntimeInfo {
    return {
      pid: process.pid,
      peerId: this.dataDir.peerId,
      addrs: this.host.getMultiaddrs().map((a) => a.toString()),
      apiUrl: this.apiUrl,
      startedAt: this.startedAt.toISOString(),
    }
  }

  /** Leaves the cluster (others mark us left at once), then stops everything. Idempotent. */
  async stop (): Promise<void> {
    this.stopping ??= this.shutdown()
    return await this.stopping
  }

  private async shutdown (): Promise<void> {
    const timeout = this.config.stopTimeoutMs
    if (this.announceTimer !== null) clearTimeout(this.announceTimer)
    if (this.pruneTimer !== null) clearInterval(this.pruneTimer)
    this.log.info('leaving the cluster')
    // A node that leaves hands its work back: its tasks stop and its claims say so, so the others
    // place them again at once (a node that dies keeps them, for its next life).
    await bounded(this.reconciler.releaseAll('the node left the cluster', Math.max(0, timeout - 2_000)), timeout).catch((err: Error) => { this.log.warn({ err: err.message }, 'tasks did not all stop') })
    await this.membership.leave(Math.min(1_000, timeout)).catch(() => {})
    await bounded(this.api.close(), timeout).catch(() => {})
    await this.rpc.stop()
    await bounded(this.executor.stopAll(Math.max(0, timeout - 1_000)), timeout).catch((err: Error) => { this.log.warn({ err: err.message }, 'tasks did not all stop') })
    await this.executor.close()
    await bounded(this.state.stop(), timeout).catch((err: Error) => { this.log.warn({ err: err.message }, 'the state did not close cleanly') })
    await this.membership.stop().catch(() => {})
    await bounded(Promise.resolve(this.host.stop()), timeout).catch((err: Error) => { this.log.warn({ err: err.message }, 'libp2p did not stop cleanly') })
    await removeRuntime(this.dataDir.path).catch(() => {})
    await this.dataDir.release()
    this.log.info('node stopped')
  }

  private discovered (peer: PeerInfo): void {
    const id = peer.id.toString()
    if (this.membership.members().some((m) => m.id === id)) return
    const addrs = peer.multiaddrs.map((a) => a.toString())
    this.log.info({ peer: id, addrs }, 'found a node by mDNS; joining it')
    this.membership.join(addrs, this.config.joinTimeoutMs).catch((err: Error) => {
      this.log.warn({ peer: id, err: err.message }, 'could not join a node found by mDNS')
    })
  }
}

/** `health` is this node's own Lifeguard score when it logged the change: 0 is healthy. */
function logMemberEvent (log: Logger, event: MemberEvent, health: number): void {
  const { member, previous } = event
  if (previous === member.state && event.previousIncarnation === member.incarnation) return
  const fields = { member: member.id, state: member.state, previous, incarnation: member.incarnation, health }
  // A new incarnation of a member that stays alive is a refutation or a change of its labels: not news.
  if (previous === member.state && member.state === 'alive') {
    log.debug(fields, 'member updated')
    return
  }
  if (member.state === 'dead' || member.state === 'suspect') log.warn(fields, `member ${member.state}`)
  else log.info(fields, previous === null ? 'member joined' : `member ${member.state}`)
}

function portError (err: Error, flag: string, port: number): Error {
  if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE' || /EADDRINUSE|address already in use/i.test(err.message)) {
    return new MurmurError('PORT_IN_USE', `port ${port} is already in use; stop what uses it or choose another ${flag}`)
  }
  if ((err as NodeJS.ErrnoException).code === 'EADDRNOTAVAIL' || /EADDRNOTAVAIL/.test(err.message)) {
    return new MurmurError('ADDRESS_UNAVAILABLE', `cannot listen for ${flag} ${port}: the address is not on this machine`)
  }
  return err
}

async function bounded<T> (promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([promise, new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => { reject(new Error(`did not finish within ${ms} ms`)) }, ms)
    })])
  } finally {
    clearTimeout(timer)
  }
}
