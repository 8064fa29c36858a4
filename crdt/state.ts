// The cluster state: one Y.Doc with a typed schema, read through validating
// accessors and written under a writer rule. No I/O: the node feeds it updates
// and persists and spreads what it emits (see README.md for the key space).

import * as Y from 'yjs'
import type { Item } from 'yjs'
import type { z } from 'zod'
import {
  type AccessRecord, type JobRecord, type NodeRecord, RECORD_LIMITS, type ClaimRecord,
  accessKeyProblem, accessRecordSchema, jobRecordSchema, nodeRecordSchema, resolveJob, taskRecordSchema,
} from './schema.ts'
import { type DecodedUpdate, type Verdict, applyRemote } from './sync.ts'
import { type Envelope, type Placement, type RecordKeys, type SignatureClaim, asEnvelope, claimKey, clientIdOf, envelopeClaim, envelopeProblem, idText, newNonce, writeSigned } from './signing.ts'

export type Kind = 'nodes' | 'jobs' | 'tasks' | 'access'
/** Kinds whose records live in writer spaces (see README.md). */
export type SpacedKind = 'jobs' | 'tasks' | 'access'
export const KINDS: readonly Kind[] = ['nodes', 'jobs', 'tasks', 'access']
const SPACED: readonly SpacedKind[] = ['jobs', 'tasks', 'access']

/** Transaction origins: writes of this process (local) and updates from elsewhere. */
export const ORIGIN = Object.freeze({
  write: 'write',
  maintain: 'maintain',
  /** Loaded from this node's own disk at start. */
  load: 'load',
  remote: 'remote',
})

export interface StateChange {
  kind: Kind
  /** Record ids whose value (as readers see it) appeared, changed or disappeared. */
  ids: string[]
  /** True for writes of this process, false for updates that came from peers or the disk. */
  local: boolean
}

export interface InvalidRecord {
  kind: Kind
  /** The key in its map, and for spaced kinds the writer space it is in. */
  key: string
  space?: string
  reason: string
}

/** Thrown when a write breaks the schema, the writer rule or a size limit. */
export class StateError extends Error {
  override name = 'StateError'
  readonly code: string
  constructor (code: string, message: string) {
    super(message)
    this.code = code
  }
}

export interface RetentionPolicy {
  now: number
  /** Finished tasks are removed this long after they finished. */
  taskRetentionMs: number
  /** Finished or stopped jobs are removed this long after they finished. */
  jobRetentionMs: number
  /** True for a node that is gone for good (dead or left for longer than the node retention). */
  isGone: (nodeId: string) => boolean
  /** A writer space is rebuilt when its garbage exceeds max(this, 2 × its live records). */
  rotateGarbageMin?: number
}

export interface MaintenanceReport {
  removedTasks: number
  removedJobs: number
  removedNodes: string[]
  removedSpaces: number
  adoptedJobs: number
  migratedRecords: number
  rotatedSpaces: number
}

interface Entry<T> { writer: string, record: T }
/** What `precheck` verified of an update: keys of signature claims (signing.ts, claimKey). */
export type Prechecked = ReadonlySet<string>
/** Where an item of an update goes: a key of a top-level map (root), or of the map that is item `parent`. */
interface Where { root: string | null, parent: Y.ID | null, key: string | null }
type RecordOf<K extends SpacedKind> = K extends 'jobs' ? JobRecord : K extends 'tasks' ? ClaimRecord : AccessRecord

/**
 * A check of a record's meaning beyond its schema and its writer's signature (a
 * job's users' signatures, node/jobs/records.ts): null to admit it, else why not.
 * A record it refuses is invalid to every reader, like one that fails its schema.
 */
export type Admit = (kind: SpacedKind, record: unknown, writer: string) => string | null

const SCHEMAS = { nodes: nodeRecordSchema, jobs: jobRecordSchema, tasks: taskRecordSchema, access: accessRecordSchema } as const
const BYTES_MAX = { nodes: RECORD_LIMITS.nodeRecordBytesMax, jobs: RECORD_LIMITS.jobRecordBytesMax, tasks: RECORD_LIMITS.taskRecordBytesMax, access: RECORD_LIMITS.accessRecordBytesMax } as const
const ROTATE_GARBAGE_MIN = 1_024

/** `<node id>/<life id>`: the records one life of one node writes. */
export function spaceKey (node: string, life: string): string {
  return `${node}/${life}`
}

export function parseSpaceKey (key: string): { node: string, life: string } | null {
  const slash = key.lastIndexOf('/')
  if (slash <= 0 || slash === key.length - 1 || key.length > 2 * RECORD_LIMITS.idCharsMax + 1) return null
  return { node: key.slice(0, slash), life: key.slice(slash + 1) }
}

/**
 * `RetentionPolicy.isGone` from a membership view: a node is gone for good once it
 * has not been reachable (alive or suspect) for `retentionMs`, counted from when
 * this tracker first saw it unreachable.
 */
export class GoneTracker {
  private readonly notReachableSince = new Map<string, number>()
  private readonly retentionMs: number

  constructor (retentionMs: number) {
    this.retentionMs = retentionMs
  }

  isGone (id: string, reachable: boolean, now: number): boolean {
    if (reachable) {
      this.notReachableSince.delete(id)
      return false
    }
    let since = this.notReachableSince.get(id)
    if (since === undefined) this.notReachableSince.set(id, since = now)
    return now - since >= this.retentionMs
  }

  /** Forgets nodes maintenance removed. */
  forget (id: string): void {
    this.notReachableSince.delete(id)
  }
}

export class ClusterState {
  readonly doc: Y.Doc
  /** This node's id, and the life id of its state database (new after a reset). */
  readonly self: string
  readonly life: string
  private readonly nodeIndex = new Map<string, NodeRecord>()
  /** kind → space key → record id → record. */
  private readonly spaces: Record<SpacedKind, Map<string, Map<string, unknown>>> = { jobs: new Map(), tasks: new Map(), access: new Map() }
  /** kind → record id → space key → record. */
  private readonly byId: Record<SpacedKind, Map<string, Map<string, unknown>>> = { jobs: new Map(), tasks: new Map(), access: new Map() }
  /** job id → the instance ids that have claims naming it. */
  private readonly tasksByJob = new Map<string, Set<string>>()
  private readonly changeListeners = new Set<(change: StateChange) => void>()
  private readonly invalidListeners = new Set<(invalid: InvalidRecord) => void>()
  private invalidCount = 0
  /** This node's records that a peer's update removed: put back by restoreLost(). */
  private readonly lost: Record<SpacedKind, Map<string, unknown>> = { jobs: new Map(), tasks: new Map(), access: new Map() }
  /** This node's own record, if a peer's update removed it (a delete is not signed: anyone can send one). */
  private lostNode: NodeRecord | null = null

  /** Signs this node's records and checks everyone's. */
  private readonly keys: RecordKeys
  private readonly random: () => number
  /** The nonce this process's Yjs client id is derived from (signing.ts, clientIdOf). */
  private nonce = ''
  private clientId = -1
  /** `<kind>/<space key>` → bytes of the valid records in that space (for the writers' byte budgets). */
  private readonly spaceBytes = new Map<string, number>()
  /** Envelopes whose signature was checked (the objects Yjs holds for integrated items). */
  private readonly verified = new WeakSet<object>()
  /** Item ids whose record the update being applied was checked for (checkRecords): not checked twice. */
  private gateChecked: Set<string> | null = null
  /** While the constructor indexes a trusted document: signatures are taken as checked. */
  private trustAll = false
  private admit: Admit | null = null
  /**
   * What `admit` said of each record, by its writer's signature (one per record and
   * place): a record is judged once, and `precheck` judges a large update's ahead,
   * in slices. Cleared when it outgrows the records it could hold.
   */
  private readonly admitted = new Map<string, string | null>()

  /**
   * `trusted`: the records `doc` holds already were checked before they were
   * stored (this node's own disk, which only it writes, and only what passed the
   * checks): their signatures are not verified again, which at about 0.1 ms a
   * record would add seconds to the start of a node that holds many. Their shape
   * and writer rule still are.
   */
  constructor (init: { self: string, life: string, keys: RecordKeys, doc?: Y.Doc, random?: () => number, trusted?: boolean, admit?: Admit }) {
    this.self = init.self
    this.admit = init.admit ?? null
    this.life = init.life
    this.keys = init.keys
    this.random = init.random ?? Math.random
    this.doc = init.doc ?? new Y.Doc()
    this.ownClient()
    this.doc.getMap('nodes').observe((event, tr) => {
      const ids: string[] = []
      for (const key of event.keysChanged) {
        const before = key === this.self ? this.nodeIndex.get(key) : undefined
        if (this.reindexNode(key)) ids.push(key)
        if (before !== undefined && !isLocal(tr) && tr.origin !== ORIGIN.load && !this.nodeIndex.has(key)) this.lostNode = before
      }
      this.emit({ kind: 'nodes', ids, local: isLocal(tr) })
    })
    for (const kind of SPACED) {
      this.top(kind).observeDeep((events, tr) => {
        const ids = new Set<string>()
        for (const event of events as unknown as Array<Y.YMapEvent<unknown>>) {
          if (event.target === this.top(kind)) {
            for (const space of event.keysChanged) for (const id of this.reindexSpace(kind, space, isLocal(tr))) ids.add(id)
          } else if (event.path.length === 1 && typeof event.path[0] === 'string') {
            const space = event.path[0]
            for (const key of event.keysChanged) if (this.reindexRecord(kind, space, key, isLocal(tr))) ids.add(key)
          }
        }
        this.emit({ kind, ids: [...ids], local: isLocal(tr) })
      })
    }
    // Records already in a doc handed to us are indexed now.
    this.trustAll = init.trusted === true
    for (const key of this.doc.getMap('nodes').keys()) this.reindexNode(key)
    for (const kind of SPACED) for (const space of this.top(kind).keys()) this.reindexSpace(kind, space, true)
    this.trustAll = false
  }

  // --- reading -------------------------------------------------------------

  node (id: string): NodeRecord | undefined { return this.nodeIndex.get(id) }
  nodes (): NodeRecord[] { return [...this.nodeIndex.values()] }

  /** The job as its highest-versioned record says. */
  job (id: string): JobRecord | undefined { return resolveJob(this.entries('jobs', id)) }
  jobs (): JobRecord[] {
    const out: JobRecord[] = []
    for (const id of this.byId.jobs.keys()) {
      const job = this.job(id)
      if (job !== undefined) out.push(job)
    }
    return out
  }

  /** The ids of every job with a record (cheaper than jobs(): nothing is resolved). */
  jobIds (): string[] { return [...this.byId.jobs.keys()] }

  /** The instance ids that some node's claim gives as of this job. */
  taskIdsOf (job: string): string[] { return [...this.tasksByJob.get(job) ?? []] }

  /** Every node's record of one job, with the node that wrote it. */
  jobRecords (id: string): Array<Entry<JobRecord>> { return this.entries('jobs', id) }

  /** Every node's claim of one task instance. */
  taskClaims (id: string): ClaimRecord[] { return this.entries('tasks', id).map((e) => e.record) }

  /** Every access record (statements and quota shares), with the node that stored it. */
  accessRecords (): Array<Entry<AccessRecord>> {
    const out: Array<Entry<AccessRecord>> = []
    for (const id of this.byId.access.keys()) out.push(...this.entries('access', id))
    return out
  }

  /** Every node's access record under one key. */
  accessEntries (id: string): Array<Entry<AccessRecord>> { return this.entries('access', id) }

  /**
   * Sets the check of records' meaning (see Admit) and applies it again to the
   * records of `kinds` held now (with `affected`, only to those it says the change
   * concerns): what it admits may change when other records do (a revocation that
   * arrives after a job its user signed once it was revoked). Returns the ids whose
   * value as readers see it changed.
   */
  readmit (kinds: readonly SpacedKind[], admit: Admit | null = this.admit, affected?: (record: unknown) => boolean): string[] {
    if (admit !== this.admit || affected === undefined) this.admitted.clear()
    this.admit = admit
    const ids: string[] = []
    for (const kind of kinds) {
      // Only the records the change can concern are judged again; the others keep their verdict.
      if (affected !== undefined) {
        for (const space of this.top(kind).values()) {
          if (!(space instanceof Y.Map)) continue
          for (const raw of space.values()) {
            const envelope = asEnvelope(raw)
            if (envelope !== null && affected(envelope.r)) this.admitted.delete(envelope.s)
          }
        }
      }
      const changed: string[] = []
      for (const space of this.top(kind).keys()) changed.push(...this.reindexSpace(kind, space, true))
      ids.push(...changed)
      this.emit({ kind, ids: changed, local: false })
    }
    return ids
  }
  tasks (): ClaimRecord[] {
    const out: ClaimRecord[] = []
    for (const id of this.byId.tasks.keys()) out.push(...this.taskClaims(id))
    return out
  }

  counts (): { nodes: number, jobs: number, tasks: number, access: number, spaces: number, invalid: number } {
    return {
      nodes: this.nodeIndex.size,
      jobs: this.byId.jobs.size,
      tasks: [...this.byId.tasks.values()].reduce((n, claims) => n + claims.size, 0),
      access: [...this.byId.access.values()].reduce((n, records) => n + records.size, 0),
      spaces: this.top('jobs').size + this.top('tasks').size + this.top('access').size,
      invalid: this.invalidCount,
    }
  }

  onChange (listener: (change: StateChange) => void): () => void {
    this.changeListeners.add(listener)
    return () => { this.changeListeners.delete(listener) }
  }

  /** Records that fail validation are skipped by every reader and reported here. */
  onInvalid (listener: (invalid: InvalidRecord) => void): () => void {
    this.invalidListeners.add(listener)
    return () => { this.invalidListeners.delete(listener) }
  }

  // --- writing -------------------------------------------------------------

  /** Runs writes as one transaction: one update, one change notification per kind. */
  transact (fn: () => void, origin: string = ORIGIN.write): void {
    this.doc.transact(fn, origin)
  }

  /** Writes this node's own record. */
  setNode (record: NodeRecord): void {
    const value = this.checked('nodes', record)
    if (value.id !== this.self) throw new StateError('NOT_WRITER', `node ${this.self} cannot write the record of node ${value.id}`)
    this.transact(() => { this.setSigned(this.doc.getMap('nodes'), 'nodes', '', value.id, value) })
  }

  putJob (record: JobRecord): void { this.put('jobs', this.checked('jobs', record)) }
  removeJob (id: string): boolean { return this.removeOwn('jobs', id) }

  /** Writes one of this node's access records (a statement it stores, its row of quota shares). */
  putAccess (record: AccessRecord): void {
    const value = this.checked('access', record)
    const problem = accessKeyProblem(value)
    if (problem !== null) throw new StateError('INVALID_RECORD', `invalid access record: ${problem}`)
    this.put('access', value)
  }

  removeAccess (id: string): boolean { return this.removeOwn('access', id) }

  /** Writes this node's claim of a task instance; `record.node` must be this node. */
  putTask (record: ClaimRecord): void {
    const value = this.checked('tasks', record)
    if (value.node !== this.self) throw new StateError('NOT_WRITER', `node ${this.self} cannot write a claim of node ${value.node}`)
    this.put('tasks', value)
  }

  removeTask (id: string): boolean { return this.removeOwn('tasks', id) }

  // --- retention and compaction ------------------------------------------------

  /**
   * Removes what retention says is over, moves this node's records out of the
   * spaces of its earlier lives, and rebuilds a space whose garbage has grown.
   * Everything in one transaction. Deterministic in its inputs.
   */
  maintain (policy: RetentionPolicy): MaintenanceReport {
    const report: MaintenanceReport = { removedTasks: 0, removedJobs: 0, removedNodes: [], removedSpaces: 0, adoptedJobs: 0, migratedRecords: 0, rotatedSpaces: 0 }
    this.transact(() => {
      for (const kind of SPACED) this.migrateEarlierLives(kind, report)
      const { gone, adopted } = this.removeGone(policy, report)
      this.expireTasks(policy, report)
      this.expireJobs(policy, report, gone, adopted)
      for (const kind of SPACED) this.rotate(kind, policy.rotateGarbageMin ?? ROTATE_GARBAGE_MIN, report)
    }, ORIGIN.maintain)
    return report
  }

  /** Live and garbage (overwritten or deleted) entries of every writer space. */
  garbage (): Array<{ kind: SpacedKind, space: string, live: number, garbage: number }> {
    const out: Array<{ kind: SpacedKind, space: string, live: number, garbage: number }> = []
    for (const kind of SPACED) {
      for (const [key, space] of this.top(kind).entries()) {
        if (space instanceof Y.Map) out.push({ kind, space: key, ...garbageOf(space) })
      }
    }
    return out
  }

  /**
   * Records of this node that a peer's update removed. Only this node removes its
   * own records; a peer that does (one that took this node for gone after a long
   * partition, or a replay of a removal this node's disk lost) is overruled: the
   * caller writes them back with restoreLost().
   */
  lostRecords (): number { return this.lost.jobs.size + this.lost.tasks.size + (this.lostNode === null ? 0 : 1) }

  /** Writes back the records counted by lostRecords(), unless this node has since written them again. */
  restoreLost (): number {
    let restored = 0
    this.transact(() => {
      for (const kind of SPACED) {
        for (const [id, record] of this.lost[kind]) {
          const present = this.entries(kind, id).some((e) => e.writer === this.self)
          if (!present) {
            this.setSigned(this.ownSpace(kind), kind, spaceKey(this.self, this.life), id, record)
            restored++
          }
        }
        this.lost[kind].clear()
      }
      if (this.lostNode !== null && !this.nodeIndex.has(this.self)) {
        this.setSigned(this.doc.getMap('nodes'), 'nodes', '', this.self, this.lostNode)
        restored++
      }
      this.lostNode = null
    })
    return restored
  }

  // --- internals -------------------------------------------------------------

  private noteLost (kind: SpacedKind, key: string, id: string, record: unknown): void {
    if (record !== undefined && parseSpaceKey(key)?.node === this.self) this.lost[kind].set(id, record)
  }

  private top (kind: SpacedKind): Y.Map<Y.Map<unknown>> { return this.doc.getMap(kind) }

  private entries<K extends SpacedKind> (kind: K, id: string): Array<Entry<RecordOf<K>>> {
    const found = this.byId[kind].get(id)
    if (found === undefined) return []
    const out: Array<Entry<RecordOf<K>>> = []
    for (const [space, record] of found) out.push({ writer: parseSpaceKey(space)!.node, record: record as RecordOf<K> })
    return out
  }

  private checked<K extends Kind> (kind: K, record: unknown): z.infer<typeof SCHEMAS[K]> {
    const parsed = SCHEMAS[kind].safeParse(record)
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!
      throw new StateError('INVALID_RECORD', `invalid ${kind} record: ${issue.path.join('.') || '(record)'}: ${issue.message}`)
    }
    const bytes = Buffer.byteLength(JSON.stringify(parsed.data))
    if (bytes > BYTES_MAX[kind]) throw new StateError('RECORD_TOO_LARGE', `the ${kind.slice(0, -1)} record would be ${bytes} bytes, over the limit of ${BYTES_MAX[kind]}; make it smaller${kind === 'nodes' ? ' (fewer or shorter labels)' : ''}`)
    return parsed.data as z.infer<typeof SCHEMAS[K]>
  }

  /** This life's space of a kind, created on first use (inside the caller's transaction). */
  private ownSpace (kind: SpacedKind): Y.Map<unknown> {
    const key = spaceKey(this.self, this.life)
    let space = this.top(kind).get(key)
    if (!(space instanceof Y.Map)) {
      space = new Y.Map<unknown>()
      this.top(kind).set(key, space)
    }
    return space
  }

  private put (kind: SpacedKind, record: { id: string }): void {
    this.transact(() => {
      // A record of an earlier life is superseded by this one.
      for (const [key, space] of this.ownSpaces(kind)) if (key !== spaceKey(this.self, this.life) && space.has(record.id)) space.delete(record.id)
      this.setSigned(this.ownSpace(kind), kind, spaceKey(this.self, this.life), record.id, record)
    })
  }

  private removeOwn (kind: SpacedKind, id: string): boolean {
    let removed = false
    this.transact(() => {
      for (const [, space] of this.ownSpaces(kind)) {
        if (space.has(id)) {
          space.delete(id)
          removed = true
        }
      }
    })
    return removed
  }

  private ownSpaces (kind: SpacedKind): Array<[string, Y.Map<unknown>]> {
    const out: Array<[string, Y.Map<unknown>]> = []
    for (const [key, space] of this.top(kind).entries()) {
      if (space instanceof Y.Map && parseSpaceKey(key)?.node === this.self) out.push([key, space])
    }
    return out
  }

  private migrateEarlierLives (kind: SpacedKind, report: MaintenanceReport): void {
    const current = spaceKey(this.self, this.life)
    for (const [key, space] of this.ownSpaces(kind)) {
      if (key === current) continue
      const records = this.spaces[kind].get(key) ?? new Map<string, unknown>()
      if (records.size > 0) {
        const target = this.ownSpace(kind)
        for (const [id, record] of records) {
          if (!target.has(id)) {
            this.setSigned(target, kind, current, id, record)
            report.migratedRecords++
          }
        }
      }
      this.top(kind).delete(key)
      report.removedSpaces++
    }
  }

  /** Returns the nodes found gone and the job ids adopted from them, both in this transaction. */
  private removeGone (policy: RetentionPolicy, report: MaintenanceReport): { gone: Set<string>, adopted: Set<string> } {
    const gone = new Set<string>()
    const adopted = new Set<string>()
    for (const id of this.nodeIndex.keys()) if (id !== this.self && policy.isGone(id)) gone.add(id)
    for (const kind of SPACED) {
      for (const key of this.top(kind).keys()) {
        const owner = parseSpaceKey(key)?.node
        if (owner !== undefined && owner !== this.self && policy.isGone(owner)) gone.add(owner)
      }
    }
    if (gone.size === 0) return { gone, adopted }
    // A job outlives the node that submitted it: keep the winning record of every
    // job that only gone nodes hold, by copying it into this node's space.
    for (const id of this.byId.jobs.keys()) {
      const entries = this.entries('jobs', id)
      const winner = resolveJob(entries)
      if (winner === undefined) continue
      const held = entries.some((e) => !gone.has(e.writer) && e.record.version === winner.version)
      if (!held) {
        this.setSigned(this.ownSpace('jobs'), 'jobs', spaceKey(this.self, this.life), id, winner)
        adopted.add(id)
        report.adoptedJobs++
      }
    }
    // Access spaces stay: the statements in them outlive the node that stored them, and so
    // do the quota shares it holds (placement/escrow.ts: they return with it, or never).
    for (const kind of SPACED) {
      if (kind === 'access') continue
      for (const key of [...this.top(kind).keys()]) {
        const owner = parseSpaceKey(key)?.node
        if (owner !== undefined && gone.has(owner)) {
          this.top(kind).delete(key)
          report.removedSpaces++
        }
      }
    }
    const nodes = this.doc.getMap('nodes')
    for (const id of gone) {
      if (nodes.has(id)) {
        nodes.delete(id)
        report.removedNodes.push(id)
      }
    }
    return { gone, adopted }
  }

  private expireTasks (policy: RetentionPolicy, report: MaintenanceReport): void {
    for (const [key, space] of this.ownSpaces('tasks')) {
      for (const [id, record] of this.spaces.tasks.get(key) ?? []) {
        const finishedAt = (record as ClaimRecord).finishedAt
        if (finishedAt !== undefined && finishedAt + policy.taskRetentionMs <= policy.now) {
          space.delete(id)
          report.removedTasks++
        }
      }
    }
  }

  /**
   * A node's record of a job goes at once when another node holds a newer one (a
   * higher version, a stop, a finish mark): that one is in force wherever it goes.
   * Not for a tie: a member could copy a user's job (the copy is valid, its
   * signatures are the user's), win the tie by its greater id, wait for this node
   * to drop its record, then delete its copy, and the job would be gone everywhere.
   * The records of a finished job go after the retention time, once every record of
   * it is the same: otherwise an older record (say, "running") would come back into
   * force. The index still shows this transaction's start: records of nodes removed
   * as gone in it do not count, and a job adopted in it is left alone until next time.
   */
  private expireJobs (policy: RetentionPolicy, report: MaintenanceReport, gone: Set<string>, adopted: Set<string>): void {
    for (const [key, space] of this.ownSpaces('jobs')) {
      for (const [id, record] of this.spaces.jobs.get(key) ?? []) {
        if (adopted.has(id)) continue
        const entries = this.entries('jobs', id).filter((e) => !gone.has(e.writer))
        const mine = record as JobRecord
        const superseded = entries.some((e) => e.writer !== this.self && newerJob(e.record, mine))
        const expired = mine.finishedAt !== undefined && mine.finishedAt + policy.jobRetentionMs <= policy.now &&
          entries.every((e) => e.writer === this.self || sameJson(e.record, mine))
        if (superseded || expired) {
          space.delete(id)
          report.removedJobs++
        }
      }
    }
  }

  /**
   * Yjs keeps an entry for every key ever deleted or overwritten in a map, but
   * collects everything inside a map that is itself deleted. So a space with much
   * garbage is replaced by a fresh one holding only its live records: what was
   * deleted is really freed, and the one entry the replacement leaves behind is a
   * few bytes (see README.md).
   */
  private rotate (kind: SpacedKind, garbageMin: number, report: MaintenanceReport): void {
    const key = spaceKey(this.self, this.life)
    const space = this.top(kind).get(key)
    if (!(space instanceof Y.Map)) return
    const { live, garbage } = garbageOf(space)
    if (garbage <= Math.max(garbageMin, 2 * live)) return
    // What the map holds now (this transaction may have removed or moved records in:
    // the index shows its start), as this node signed it; the fresh map goes in first,
    // since its records are signed for their new items, whose ids exist only once it is in the document.
    const records: Array<[string, unknown]> = []
    for (const [id, raw] of space.entries()) {
      const envelope = asEnvelope(raw)
      if (envelope !== null && this.verified.has(raw as object)) records.push([id, envelope.r])
    }
    const fresh = new Y.Map<unknown>()
    this.top(kind).set(key, fresh)
    for (const [id, record] of records) this.setSigned(fresh, kind, key, id, record)
    report.rotatedSpaces++
  }

  // --- signatures ---------------------------------------------------------------

  /** This process writes under a client id derived from its id and a nonce (signing.ts); a new nonce if Yjs ever changed it. */
  private ownClient (): void {
    if (this.nonce !== '' && this.doc.clientID === this.clientId) return
    this.nonce = newNonce(this.random)
    this.clientId = clientIdOf(this.self, this.nonce)
    this.doc.clientID = this.clientId
  }

  /** Writes a record into a map that is in the document, signed for the item it is about to get. Inside a transaction. */
  private setSigned (map: Y.Map<unknown>, kind: Kind, space: string, key: string, record: unknown): void {
    this.ownClient()
    this.verified.add(writeSigned(map, { kind, space }, key, record, { keys: this.keys, nonce: this.nonce }))
  }

  /** The record in an envelope, if `owner` signed it for the item that holds it; else why not. */
  private open (map: Y.Map<unknown>, kind: Kind, space: string, key: string, owner: string, raw: unknown): { record: unknown, sig: string } | string {
    const envelope = asEnvelope(raw)
    if (envelope === null) return 'is not a signed record'
    if (this.verified.has(raw as object)) return { record: envelope.r, sig: envelope.s }
    const item = map._map.get(key)
    if (item === undefined) return 'is not in the document'
    if (item.rightOrigin !== null) return 'is not in an item a record is written in'
    const place: Placement = { kind, space, parent: idText(map._item?.id ?? null), key, item: idText(item.id), origin: idText(item.origin) }
    if (!this.trustAll && this.gateChecked?.has(place.item) !== true) {
      const problem = envelopeProblem(this.keys, owner, place, item.id.client, envelope)
      if (problem !== null) return problem
    }
    this.verified.add(raw as object)
    return { record: envelope.r, sig: envelope.s }
  }

  /**
   * Checks an update from a peer, and every record in it, before any of it is
   * applied: a record that is not signed by the owner of its key or space, for the
   * very item that carries it, refuses the whole update. So a peer cannot put an
   * item under an id another writer will use (replicas that took it would drop the
   * real one, and disagree for good), nor grow the document with types the schema
   * does not know, nor write more than a writer's byte budget.
   */
  applyRemote (update: Uint8Array, prechecked?: Prechecked): Verdict {
    const checked = new Set<string>()
    const verify = (claim: SignatureClaim): boolean => prechecked?.has(claimKey(claim)) === true || this.keys.verify(claim.writer, claim.bytes, claim.signature)
    this.gateChecked = checked
    try {
      return applyRemote(this.doc, update, ORIGIN.remote, (decoded) => this.checkRecords(decoded, checked, verify))
    } finally {
      this.gateChecked = null
    }
  }

  /**
   * Verifies the signatures of an update's records ahead of applyRemote, a slice
   * of `slice` at a time with `pause()` between slices, so that a large diff (a
   * late joiner's: about 0.1 ms a record) does not hold the event loop for
   * seconds. What verifies here, applyRemote(update, result) does not verify
   * again; what does not, it refuses as ever. Slices count records, not time:
   * the simulator stays deterministic.
   */
  async precheck (update: Uint8Array, pause: () => Promise<void>, slice = 64): Promise<Prechecked> {
    const out = new Set<string>()
    let decoded: DecodedUpdate
    try {
      decoded = Y.decodeUpdate(update)
    } catch {
      return out
    }
    const claims: SignatureClaim[] = []
    const records: Array<{ kind: SpacedKind, owner: string, envelope: Envelope }> = []
    this.checkRecords(decoded, new Set(), (claim) => { claims.push(claim); return true }, (kind, owner, envelope) => { if (kind !== 'access') records.push({ kind, owner, envelope }) })
    for (let i = 0; i < claims.length; i++) {
      const claim = claims[i]!
      if (this.keys.verify(claim.writer, claim.bytes, claim.signature)) out.add(claimKey(claim))
      if ((i + 1) % slice === 0) await pause()
    }
    // The node's own check of what the records mean (a job's users' signatures), ahead too.
    if (this.admit !== null) {
      for (let i = 0; i < records.length; i++) {
        const { kind, owner, envelope } = records[i]!
        const parsed = SCHEMAS[kind].safeParse(envelope.r)
        if (parsed.success && !this.admitted.has(envelope.s)) this.admitOnce(kind, parsed.data, owner, envelope.s)
        if ((i + 1) % slice === 0) await pause()
      }
    }
    return out
  }

  private checkRecords (decoded: DecodedUpdate, checked: Set<string>, verify: (claim: SignatureClaim) => boolean, onRecord?: (kind: SpacedKind, owner: string, envelope: Envelope) => void): Verdict {
    const inUpdate = new Map<number, Array<Y.Item | Y.GC>>()
    for (const struct of decoded.structs) {
      if (struct instanceof Y.Skip) continue
      let list = inUpdate.get(struct.id.client)
      if (list === undefined) inUpdate.set(struct.id.client, list = [])
      list.push(struct)
    }
    // Each writer's structs come in clock order: found by binary search (a late joiner's diff holds many).
    const find = (id: Y.ID): Y.Item | Y.GC | null => {
      const list = inUpdate.get(id.client) ?? []
      let [lo, hi] = [0, list.length - 1]
      while (lo <= hi) {
        const mid = (lo + hi) >> 1
        const struct = list[mid]!
        if (id.clock < struct.id.clock) hi = mid - 1
        else if (id.clock >= struct.id.clock + struct.length) lo = mid + 1
        else return struct
      }
      try {
        return Y.getItem(this.doc.store, id) as Y.Item | Y.GC
      } catch {
        return null
      }
    }
    const places = new Map<Y.Item | Y.GC, Where | null>()
    const whereOf = (start: Y.Item | Y.GC): Where | null => {
      // An item written after another (an overwrite) carries no parent of its own: Yjs takes its origin's.
      const chain: Array<Y.Item | Y.GC> = []
      let found: Where | null | undefined
      for (let struct: Y.Item | Y.GC | null = start; found === undefined;) {
        if (struct === null || struct instanceof Y.GC) { found = null; break }
        const known = places.get(struct)
        if (known !== undefined) { found = known; break }
        chain.push(struct)
        if (struct.parent instanceof Y.AbstractType) {
          const item = struct.parent._item
          found = { root: item === null ? rootName(this.doc, struct.parent) : null, parent: item?.id ?? null, key: struct.parentSub }
        } else if (typeof struct.parent === 'string') found = { root: struct.parent, parent: null, key: struct.parentSub }
        else if (struct.parent instanceof Y.ID) found = { root: null, parent: struct.parent, key: struct.parentSub }
        else {
          const next: Y.ID | null = struct.origin ?? struct.rightOrigin
          struct = next === null ? null : find(next)
          if (chain.length > inUpdate.size + decoded.structs.length + 1) { found = null; break }
        }
      }
      for (const struct of chain) places.set(struct, found)
      return found
    }
    const refuse = (reason: 'forged' | 'not-allowed' | 'over-budget'): Verdict => ({ ok: false, reason })
    const added = new Map<string, number>()
    const spaces = new Map<string, Set<string>>()
    for (const struct of decoded.structs) {
      if (!(struct instanceof Y.Item)) continue
      const where = whereOf(struct)
      // No parent to be found (it was deleted and collected): Yjs drops the item.
      if (where === null) continue
      const content = struct.content
      if (where.root !== null) {
        if (!(KINDS as readonly string[]).includes(where.root) || where.key === null) return refuse('not-allowed')
        if (content instanceof Y.ContentDeleted) continue
        if (where.root !== 'nodes') {
          // A writer space: a map, under a space key.
          if (!(content instanceof Y.ContentType) || !(content.type instanceof Y.Map) || parseSpaceKey(where.key) === null) return refuse('not-allowed')
          const owner = parseSpaceKey(where.key)!.node
          const budgetKey = `${where.root}/${owner}`
          let ofWriter = spaces.get(budgetKey)
          if (ofWriter === undefined) spaces.set(budgetKey, ofWriter = this.spacesOf(where.root as SpacedKind, owner))
          if (ofWriter.add(where.key).size > RECORD_LIMITS.spacesPerWriterMax) return refuse('over-budget')
          continue
        }
        const problem = this.checkItem(struct, { kind: 'nodes', space: '', parent: '', key: where.key, owner: where.key }, verify)
        if (problem !== null) return refuse('forged')
        checked.add(idText(struct.id))
        continue
      }
      const parent = find(where.parent!)
      if (parent === null || parent instanceof Y.GC) continue
      const space = whereOf(parent)
      if (space === null) continue
      const spaceKeyOf = space.key === null ? null : parseSpaceKey(space.key)
      if (space.root === null || space.root === 'nodes' || !(KINDS as readonly string[]).includes(space.root) || spaceKeyOf === null || where.key === null ||
        !(parent instanceof Y.Item) || !(parent.content instanceof Y.ContentType) || !(parent.content.type instanceof Y.Map)) return refuse('not-allowed')
      if (content instanceof Y.ContentDeleted) continue
      const problem = this.checkItem(struct, { kind: space.root, space: space.key!, parent: idText(parent.id), key: where.key, owner: spaceKeyOf.node }, verify)
      if (problem !== null) return refuse('forged')
      if (onRecord !== undefined) onRecord(space.root as SpacedKind, spaceKeyOf.node, asEnvelope((content as Y.ContentAny).arr[0])!)
      checked.add(idText(struct.id))
      const budgetKey = `${space.root}/${spaceKeyOf.node}`
      const bytes = (added.get(budgetKey) ?? this.writerBytes(space.root as SpacedKind, spaceKeyOf.node)) + (jsonBytes((content as Y.ContentAny).arr[0]) ?? 0)
      added.set(budgetKey, bytes)
      if (bytes > RECORD_LIMITS.writerBytesMax[space.root as SpacedKind]) return refuse('over-budget')
    }
    return { ok: true }
  }

  /** Why an item of an update does not hold a record its owner signed for it, or null. */
  private checkItem (item: Y.Item, at: { kind: string, space: string, parent: string, key: string, owner: string }, verify: (claim: SignatureClaim) => boolean): string | null {
    if (!(item.content instanceof Y.ContentAny) || item.content.arr.length !== 1 || item.rightOrigin !== null) return 'is not a record'
    const envelope = asEnvelope(item.content.arr[0])
    if (envelope === null) return 'is not a signed record'
    const claim = envelopeClaim(at.owner, { kind: at.kind, space: at.space, parent: at.parent, key: at.key, item: idText(item.id), origin: idText(item.origin) }, item.id.client, envelope)
    if (typeof claim === 'string') return claim
    return verify(claim) ? null : `is not signed by ${at.owner}`
  }

  /** The writer spaces of one writer, as the document has them now. */
  private spacesOf (kind: SpacedKind, owner: string): Set<string> {
    const out = new Set<string>()
    for (const key of this.top(kind).keys()) if (parseSpaceKey(key)?.node === owner) out.add(key)
    return out
  }

  /** The bytes of one writer's valid records of a kind, over all its spaces. */
  private writerBytes (kind: SpacedKind, owner: string): number {
    let total = 0
    for (const key of this.spacesOf(kind, owner)) total += this.spaceBytes.get(`${kind}/${key}`) ?? 0
    return total
  }

  private emit (change: StateChange): void {
    if (change.ids.length === 0) return
    for (const listener of this.changeListeners) listener(change)
  }

  private invalid (invalid: InvalidRecord): void {
    this.invalidCount++
    for (const listener of this.invalidListeners) listener(invalid)
  }

  /** Re-reads one node record; true if what readers see changed. */
  private reindexNode (key: string): boolean {
    const before = this.nodeIndex.get(key)
    const map = this.doc.getMap('nodes')
    const raw = map.get(key)
    let after: NodeRecord | undefined
    if (raw !== undefined) {
      const opened = this.open(map, 'nodes', '', key, key, raw)
      if (typeof opened === 'string') this.invalid({ kind: 'nodes', key, reason: opened })
      else {
        const parsed = nodeRecordSchema.safeParse(opened.record)
        const tooBig = sizeProblem('nodes', opened.record)
        if (tooBig !== null) this.invalid({ kind: 'nodes', key, reason: tooBig })
        else if (!parsed.success) this.invalid({ kind: 'nodes', key, reason: firstIssue(parsed.error) })
        else if (parsed.data.id !== key) this.invalid({ kind: 'nodes', key, reason: `holds the record of node ${parsed.data.id}` })
        else after = parsed.data
      }
    }
    if (after === undefined) this.nodeIndex.delete(key)
    else this.nodeIndex.set(key, after)
    return !sameJson(before, after)
  }

  /** Re-reads a whole writer space (it appeared, was replaced or deleted); returns the ids that changed. */
  private reindexSpace (kind: SpacedKind, key: string, local: boolean): string[] {
    // A copy: the loop below updates the index map it came from.
    const before = new Map(this.spaces[kind].get(key) ?? [])
    const after = new Map<string, unknown>()
    const space = this.top(kind).get(key)
    const owner = parseSpaceKey(key)
    if (space !== undefined && !(space instanceof Y.Map)) this.invalid({ kind, key, reason: 'is not a map of records' })
    else if (space !== undefined && owner === null) this.invalid({ kind, key, reason: 'is not a writer space key (<node>/<life>)' })
    else if (space !== undefined) {
      for (const [id, raw] of space.entries()) {
        const record = this.validRecord(kind, key, owner!.node, space, id, raw)
        if (record !== undefined) after.set(id, record)
      }
    }
    const changed: string[] = []
    for (const id of new Set([...before.keys(), ...after.keys()])) {
      if (!local && !after.has(id)) this.noteLost(kind, key, id, before.get(id))
      this.setIndexed(kind, key, id, after.get(id))
      if (!sameJson(before.get(id), after.get(id))) changed.push(id)
    }
    if (after.size === 0) this.spaces[kind].delete(key)
    return changed
  }

  private reindexRecord (kind: SpacedKind, key: string, id: string, local: boolean): boolean {
    const space = this.top(kind).get(key)
    const owner = parseSpaceKey(key)
    if (!(space instanceof Y.Map) || owner === null) return false
    const before = this.spaces[kind].get(key)?.get(id)
    const raw = space.get(id)
    const after = raw === undefined ? undefined : this.validRecord(kind, key, owner.node, space, id, raw)
    if (!local && after === undefined) this.noteLost(kind, key, id, before)
    this.setIndexed(kind, key, id, after)
    return !sameJson(before, after)
  }

  private validRecord (kind: SpacedKind, space: string, owner: string, map: Y.Map<unknown>, id: string, envelope: unknown): unknown {
    const opened = this.open(map, kind, space, id, owner, envelope)
    if (typeof opened === 'string') {
      this.invalid({ kind, key: id, space, reason: opened })
      return undefined
    }
    const raw = opened.record
    const tooBig = sizeProblem(kind, raw)
    if (tooBig !== null) {
      this.invalid({ kind, key: id, space, reason: tooBig })
      return undefined
    }
    const parsed = SCHEMAS[kind].safeParse(raw)
    if (!parsed.success) {
      this.invalid({ kind, key: id, space, reason: firstIssue(parsed.error) })
      return undefined
    }
    if (parsed.data.id !== id) {
      this.invalid({ kind, key: id, space, reason: `is stored under the key of ${parsed.data.id}` })
      return undefined
    }
    if (kind === 'tasks' && (parsed.data as ClaimRecord).node !== owner) {
      this.invalid({ kind, key: id, space, reason: `claims node ${(parsed.data as ClaimRecord).node} but is in the space of ${owner}` })
      return undefined
    }
    const problem = kind === 'access' ? accessKeyProblem(parsed.data as AccessRecord) : this.admitOnce(kind, parsed.data, owner, opened.sig)
    if (problem !== null) {
      this.invalid({ kind, key: id, space, reason: problem })
      return undefined
    }
    return parsed.data
  }

  /** The node's check of a record's meaning, once per record (by its writer's signature). */
  private admitOnce (kind: SpacedKind, record: unknown, owner: string, sig: string): string | null {
    if (this.admit === null) return null
    let problem = this.admitted.get(sig)
    if (problem === undefined) {
      problem = this.admit(kind, record, owner)
      if (this.admitted.size >= Math.max(100_000, 2 * (this.byId.jobs.size + this.byId.tasks.size))) this.admitted.clear()
      this.admitted.set(sig, problem)
    }
    return problem
  }

  private setIndexed (kind: SpacedKind, space: string, id: string, record: unknown): void {
    const jobsBefore = kind === 'tasks' ? this.jobsOfTask(id) : null
    this.setIndexedRecord(kind, space, id, record)
    if (jobsBefore === null) return
    const jobsAfter = this.jobsOfTask(id)
    for (const job of jobsBefore) {
      if (jobsAfter.has(job)) continue
      const ids = this.tasksByJob.get(job)
      ids?.delete(id)
      if (ids?.size === 0) this.tasksByJob.delete(job)
    }
    for (const job of jobsAfter) {
      if (jobsBefore.has(job)) continue
      let ids = this.tasksByJob.get(job)
      if (ids === undefined) this.tasksByJob.set(job, ids = new Set())
      ids.add(id)
    }
  }

  /** The jobs the claims of one instance name: one, unless a peer wrote nonsense. */
  private jobsOfTask (id: string): Set<string> {
    const out = new Set<string>()
    for (const record of this.byId.tasks.get(id)?.values() ?? []) out.add((record as ClaimRecord).job)
    return out
  }

  private setIndexedRecord (kind: SpacedKind, space: string, id: string, record: unknown): void {
    let inSpace = this.spaces[kind].get(space)
    let claims = this.byId[kind].get(id)
    const bytesKey = `${kind}/${space}`
    const bytes = (this.spaceBytes.get(bytesKey) ?? 0) - recordBytes(inSpace?.get(id)) + recordBytes(record)
    if (bytes > 0) this.spaceBytes.set(bytesKey, bytes)
    else this.spaceBytes.delete(bytesKey)
    if (record === undefined) {
      inSpace?.delete(id)
      if (inSpace?.size === 0) this.spaces[kind].delete(space)
      claims?.delete(space)
      if (claims?.size === 0) this.byId[kind].delete(id)
      return
    }
    if (inSpace === undefined) this.spaces[kind].set(space, inSpace = new Map())
    inSpace.set(id, record)
    if (claims === undefined) this.byId[kind].set(id, claims = new Map())
    claims.set(space, record)
  }
}

/** Whether job record `a` is in force over `b` for another reason than its writer's id (see resolveJob). */
function newerJob (a: JobRecord, b: JobRecord): boolean {
  if ((a.desired === 'stopped') !== (b.desired === 'stopped')) return a.desired === 'stopped'
  if (a.version !== b.version) return a.version > b.version
  return a.finishedAt !== undefined && b.finishedAt === undefined
}

/** The name of a top-level type of a document. */
function rootName (doc: Y.Doc, type: Y.AbstractType<unknown>): string | null {
  for (const [name, shared] of doc.share) if (shared === type) return name
  return null
}

function isLocal (tr: Y.Transaction): boolean {
  return tr.origin === ORIGIN.write || tr.origin === ORIGIN.maintain
}

/** Entries a Y.Map holds: one per live key, plus every overwritten or deleted value still kept. */
function garbageOf (map: Y.Map<unknown>): { live: number, garbage: number } {
  let live = 0
  let items = 0
  for (const head of map._map.values()) {
    if (!head.deleted) live++
    for (let item: Item | null = head; item !== null; item = item.left) items++
  }
  return { live, garbage: items - live }
}

function firstIssue (error: z.ZodError): string {
  const issue = error.issues[0]
  return issue === undefined ? 'invalid' : `${issue.path.join('.') || '(record)'}: ${issue.message}`
}

/** Bytes of a value as JSON, or null for a value that is not JSON (a BigInt, a cycle). */
function jsonBytes (value: unknown): number | null {
  try {
    const text = JSON.stringify(value)
    return text === undefined ? null : Buffer.byteLength(text)
  } catch {
    return null
  }
}

/** Bytes of an indexed record (valid JSON), counted once per record object. */
const RECORD_BYTES = new WeakMap<object, number>()
function recordBytes (record: unknown): number {
  if (typeof record !== 'object' || record === null) return 0
  let bytes = RECORD_BYTES.get(record)
  if (bytes === undefined) RECORD_BYTES.set(record, bytes = jsonBytes(record) ?? 0)
  return bytes
}

/** Records from peers are held to the same size limit as local writes. */
function sizeProblem (kind: Kind, raw: unknown): string | null {
  const bytes = jsonBytes(raw)
  if (bytes === null) return 'is not JSON'
  return bytes > BYTES_MAX[kind] ? `is ${bytes} bytes, over the limit of ${BYTES_MAX[kind]}` : null
}

/** Records in the index are validated JSON; the comparison cannot throw. */
function sameJson (a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (a === undefined || b === undefined) return false
  try {
    return JSON.stringify(a) === JSON.stringify(b)
  } catch {
    return false
  }
}
