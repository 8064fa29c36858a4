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
import { type NodeConfig, readClusterKey } from './config.ts'
import { type DataDir, openDataDir, removeRuntime, writeRuntime } from './datadir.ts'
import { boot, reconcileConfig } from './boot.ts'
import { systemClock } from './clock.ts'
import { type CoreParts, startCore } from './core.ts'
import { MurmurError } from './errors.ts'
import { Executor } from './executor/executor.ts'
import { FaultInjector, type FaultRules } from './faults.ts'
import { type Host, createHost } from './host.ts'
import type { JobService } from './jobs/service.ts'
import { Lifecycle, bounded } from './lifecycle.ts'
import { MembershipService } from './membership.ts'
import type { Reconciler } from './reconcile/loop.ts'
import { TaskRpc } from './rpc.ts'
import { nodeKeys } from './keys.ts'
import { AccessBook } from './access.ts'
import { RequestAuth } from './auth.ts'
import { namespaceOf } from './jobs/records.ts'
import { learnGrant, usersBackend } from './users.ts'
import { type StateService, loadState } from './state.ts'
import { StateStore, resetState } from './state-store.ts'
import { Libp2pStateTransport } from './state-transport.ts'

/** What `murmur status` shows of a node started with --insecure-open-cluster. */
const OPEN_CLUSTER_WARNING = "this node runs an open cluster (no cluster key): anyone who reaches its port can join and run tasks; make a key with 'murmur cluster init' and restart every node with --cluster-key"

/** Label changes reach membership at most this often (they are in the shared state at once). */
const LABEL_ANNOUNCE_MS = 1_000

export interface RuntimeInfo {
  pid: number
  peerId: string
  addrs: string[]
  apiUrl: string
  startedAt: string
  /** Running without a cluster key (--insecure-open-cluster). */
  openCluster: boolean
}

/** A node's parts, by name, in the order they start (they stop in reverse). */
interface NodeParts extends CoreParts {
  storage: StateStore
  executor: Executor
  host: Host
  api: FastifyInstance
  membership: MembershipService
  node: MurmurNode
}

export class MurmurNode extends EventEmitter<{ leave: [] }> {
  readonly config: NodeConfig
  readonly log: Logger
  readonly dataDir: DataDir
  readonly host: Host
  readonly membership: MembershipService
  readonly state: StateService
  readonly apiUrl: string
  readonly executor: Executor
  readonly reconciler: Reconciler
  readonly jobs: JobService
  readonly startedAt = new Date()
  private readonly parts: Lifecycle<NodeParts>
  private stopping: Promise<void> | null = null
  /** Labels as set by flags and later through the API. */
  private labels: Record<string, string>
  private announceTimer: NodeJS.Timeout | null = null
  private pruneTimer: NodeJS.Timeout | null = null
  private lastAnnounce = 0

  private constructor (init: { config: NodeConfig, log: Logger, dataDir: DataDir, parts: Lifecycle<NodeParts>, apiUrl: string }) {
    super()
    const { parts } = init
    this.config = init.config
    this.log = init.log
    this.dataDir = init.dataDir
    this.parts = parts
    this.host = parts.get('host')
    this.membership = parts.get('membership')
    this.state = parts.get('state')
    this.apiUrl = init.apiUrl
    this.executor = parts.get('executor')
    this.reconciler = parts.get('reconciler')
    this.jobs = parts.get('jobs')
    // Labels set through the API survive a restart; flags given again win.
    this.labels = { ...this.state.records.node(init.dataDir.peerId)?.labels, ...init.config.labels }
  }

  /**
   * Starts a node, joins through config.join, and returns once it is a member.
   * The parts start in order, each given what started before it; if one fails,
   * those before it stop in reverse.
   */
  static async start (config: NodeConfig, rootLog: Logger): Promise<MurmurNode> {
    const dataDir = await openDataDir(config.dataDir, (key) => peerIdFromPrivateKey(key).toString())
    const self = dataDir.peerId
    const log = rootLog.child({ node: self.slice(-8) })
    const parts = new Lifecycle<NodeParts>()
    parts.onStop('data dir', async () => { await removeRuntime(dataDir.path).catch(() => {}); await dataDir.release() })
    try {
      const faults = config.faultInjection
        ? new FaultInjector({ self, log: log.child({ component: 'faults' }), rules: config.faultRules ?? undefined })
        : undefined
      // The state database opens before the network: a corrupt one stops the start at once.
      const stateDir = join(dataDir.path, 'state')
      const storage = await parts.add('storage', await openStore(stateDir, config.state.resetState, log), undefined, async () => { await storage.close() })
      // One set of keys for all the node signs and checks: its records and its membership statements.
      const keys = nodeKeys(dataDir.privateKey)
      const loaded = await loadState({ self, keys, storage, log: log.child({ component: 'state' }), random: Math.random, where: stateDir })
      // Users: grants checked against the root key, jobs against their users' signatures (access/).
      const access = config.rootKey === null ? null : new AccessBook(loaded, config.rootKey)
      if (access === null) log.warn('no users (no --root-key): whoever reaches this node\'s API may do everything; run a closed cluster with --cluster-key and --root-key')
      const auth = access === null
        ? null
        : new RequestAuth({ book: access, now: () => systemClock.now(), log: log.child({ component: 'auth' }), learn: async (grant) => { await learnGrant(parts.get('state'), access, grant) } })
      const executor = await parts.add('executor', Executor.open({
        nodeId: self,
        dir: join(dataDir.path, 'tasks'),
        capacity: { cpuMillis: config.cpuMillis, memoryBytes: config.memoryBytes },
        isolation: config.isolation,
        taskUids: config.taskUids,
        log: log.child({ component: 'executor' }),
      }), undefined, async () => {
        // Only stops watching: a start that fails leaves the previous life's tasks for the next one to judge.
        await executor.close()
      })
      if (config.clusterKeyFile === null) log.warn('open cluster (--insecure-open-cluster): anyone who reaches this node\'s port can join the cluster and run tasks; make a key with \'murmur cluster init\' and start every node with --cluster-key')
      // Read again here (the config checked it): the bytes stay in the host, not in the config.
      const clusterKey = config.clusterKeyFile === null ? undefined : readClusterKey(config.clusterKeyFile)
      const host = await createHost({ privateKey: dataDir.privateKey, host: config.host, port: config.port, mdns: config.mdns, dialTimeoutMs: config.dialTimeoutMs, faults, ...(clusterKey === undefined ? {} : { clusterKey }) })
      await parts.add('host', host, async () => { await Promise.resolve(host.start()).catch((err: Error) => { throw portError(err, '--port', config.port) }) }, async () => { await Promise.resolve(host.stop()) })

      // The API listens before the other parts start: until they are there it answers 503.
      const events = new EventEmitter<{ event: [MemberEvent], state: [StateChange] }>()
      const api = createApi({
        id: self,
        apiHost: config.apiHost,
        self: () => parts.get('node').info(),
        members: () => parts.get('membership').members(),
        onMemberEvent: (listener) => {
          events.on('event', listener)
          return () => events.off('event', listener)
        },
        leave: () => { parts.get('node').emit('leave') },
        state: () => parts.get('state').info(),
        stateNodes: () => loaded.nodes(),
        compareState: async (peer) => await parts.get('state').compare(peer),
        onStateChange: (listener) => {
          events.on('state', listener)
          return () => events.off('state', listener)
        },
        updateLabels: async (set, remove) => await parts.get('node').updateLabels(set, remove),
        tasks: () => executor.list(),
        readTaskLogs: async (id, stream, opts) => await executor.readLogs(id, stream, opts),
        followTaskLogs: (id, stream, opts) => executor.followLogs(id, stream, opts),
        jobs: () => parts.get('jobs'),
        status: async () => {
          const members = parts.get('membership').members()
          const status = await parts.get('jobs').status(members, members.filter((m) => m.meta.isolation === 'none' && (m.state === 'alive' || m.state === 'suspect')).map((m) => m.id))
          const own = [
            ...(config.clusterKeyFile === null ? [OPEN_CLUSTER_WARNING] : []),
            ...(executor.taskUser.separate ? [] : [`tasks on this node run as its own user: ${executor.taskUser.detail}`]),
          ]
          return own.length === 0 ? status : { ...status, degraded: [...own, ...status.degraded] }
        },
        jobRecord: (id) => loaded.job(id),
        taskRecords: (id) => loaded.taskClaims(id),
        auth,
        users: () => usersBackend({ self, book: access, state: parts.get('state'), clock: systemClock, log: log.child({ component: 'users' }), usage: () => parts.get('jobs').usage() }),
        namespaceOfJob: (job) => { const record = loaded.job(job); return record === undefined ? undefined : namespaceOf(record) },
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
      await parts.add('api', api, async () => { await api.listen({ host: config.apiHost, port: config.apiPort }).catch((err: Error) => { throw portError(err, '--api-port', config.apiPort) }) }, async () => { await api.close() })
      const address = api.server.address()
      const apiPort = typeof address === 'object' && address !== null ? address.port : config.apiPort
      const apiUrl = `http://${config.apiHost.includes(':') ? `[${config.apiHost}]` : config.apiHost}:${apiPort}`

      const membership = new MembershipService({
        host,
        config: config.membership,
        meta: { cpuMillis: config.cpuMillis, memoryBytes: config.memoryBytes, labels: { ...loaded.node(self)?.labels, ...config.labels }, apiUrl, isolation: executor.isolation.kind },
        tickMs: config.tickMs,
        dialTimeoutMs: config.dialTimeoutMs,
        log: log.child({ component: 'membership' }),
        faults,
        // Its statements about itself (alive, left) are signed with the node's key, and others' are checked.
        keys,
      })
      membership.on('event', (event) => {
        logMemberEvent(log, event, membership.swim.health)
        events.emit('event', event)
      })
      await parts.add('membership', membership, async () => { await membership.start() }, async () => { await membership.stop() })
      const { state, reconciler, jobs } = await startCore(parts, {
        self,
        log,
        clock: systemClock,
        random: Math.random,
        loaded,
        storage,
        transport: new Libp2pStateTransport(host, faults),
        members: {
          peers: () => membership.members().filter((m) => m.state === 'alive' && m.id !== self).map((m) => m.id),
          stateOf: (id) => membership.swim.member(id)?.state,
          list: () => membership.members(),
        },
        executor,
        state: config.state,
        reconcile: reconcileConfig({ deadRetentionMs: config.membership.deadRetentionMs, taskRetentionMs: config.state.taskRetentionMs }, config.reconcile),
        rpc: new TaskRpc(host, log.child({ component: 'rpc' }), faults),
        access,
      })
      state.on('change', (change) => { events.emit('state', change) })
      const node = await parts.add('node', new MurmurNode({ config, log, dataDir, parts, apiUrl }))

      if (config.mdns) host.addEventListener('peer:discovery', (evt: CustomEvent<PeerInfo>) => { node.discovered(evt.detail) })
      if (config.join.length > 0) log.info({ join: config.join }, 'joining')
      await boot({
        self,
        log,
        clock: systemClock,
        state,
        executor,
        reconciler,
        join: config.join.length === 0 ? undefined : async () => {
          await membership.join(config.join, config.joinTimeoutMs).catch((err: Error) => {
            throw new MurmurError('JOIN_FAILED', `could not join the cluster: ${err.message}; check the address and that a node runs there`)
          })
        },
        aliveMembers: () => membership.members().filter((m) => m.id !== self && m.state === 'alive').map((m) => m.id),
        ownRecord: () => node.ownRecord(),
        // After a --reset-state, the labels set earlier come back from the cluster's copy of our record.
        afterSync: () => { node.adoptStoredLabels() },
        triggers: (listener) => {
          const onMember = (): void => { listener() }
          state.on('change', listener)
          membership.on('event', onMember)
          return () => { state.off('change', listener); membership.off('event', onMember) }
        },
      })
      node.pruneEndedTasks()
      state.on('change', (change) => { node.guardOwnRecord(change) })
      await writeRuntime(dataDir.path, node.runtime())
      log.info({ peerId: self, addrs: node.runtime().addrs, api: apiUrl }, 'node started')
      return node
    } catch (err) {
      await parts.stop(config.stopTimeoutMs, log)
      throw err
    }
  }

  info (): NodeInfo {
    return {
      id: this.dataDir.peerId,
      openCluster: this.config.clusterKeyFile === null,
      addrs: this.host.getMultiaddrs().map((a) => a.toString()),
      apiUrl: this.apiUrl,
      profile: this.config.profile,
      startedAt: this.startedAt.toISOString(),
      health: this.membership.swim.health,
      isolation: this.executor.isolation,
      taskUser: this.executor.taskUser,
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

  /** Ended tasks keep their logs for the task retention, then go (each holds two open files). */
  private pruneEndedTasks (): void {
    const retention = this.config.state.taskRetentionMs
    this.pruneTimer = setInterval(() => {
      this.executor.prune(Date.now() - retention).then((pruned) => {
        if (pruned.length > 0) this.log.info({ tasks: pruned.length }, 'removed ended tasks past their retention')
      }, (err: Error) => { this.log.warn({ err: err.message }, 'could not remove ended tasks') })
    }, Math.min(retention, 60_000)).unref()
  }

  private adoptStoredLabels (): void {
    const labels = { ...this.state.records.node(this.dataDir.peerId)?.labels, ...this.config.labels }
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

  ownRecord (): NodeRecord {
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
    const stored = this.state.records.node(this.dataDir.peerId)
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
      openCluster: this.config.clusterKeyFile === null,
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
    // What the loop did not hand back (a task it was still starting) is stopped too: nothing is left behind.
    await bounded(this.executor.stopAll(Math.max(0, timeout - 1_000)), timeout).catch((err: Error) => { this.log.warn({ err: err.message }, 'tasks did not all stop') })
    await this.parts.stop(timeout, this.log)
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

/** Opens the state database (with --reset-state, moved aside first and started empty). */
async function openStore (dir: string, reset: boolean, log: Logger): Promise<StateStore> {
  if (reset) {
    const aside = await resetState(dir)
    if (aside !== null) log.warn({ dir, movedTo: aside }, 'state database moved aside (--reset-state); starting empty, peers will fill it')
  }
  return await StateStore.open(dir, { log: log.child({ component: 'state-store' }) })
}
