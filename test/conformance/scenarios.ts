// One conformance suite, two clusters: the simulator and real node processes on
// loopback. Both must pass the same scenarios with the same expectations, so the
// simulator cannot drift from the real thing.
//
// - membership: real Swim cores on a simulated network and virtual clock, against
//   Swim over libp2p;
// - the shared state: complete simulated nodes (the node's own StateService and
//   jobs service, over the simulated network and disk), against node processes:
//   writes on every node, a node away while others write, a late joiner, and a
//   peer that is not a member sending updates, corrupt ones among them.

import * as Y from 'yjs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encodeFrame } from '../../crdt/sync.ts'
import type { MemberState } from '../../membership/types.ts'
import { type StateStats, gossipMessage } from '../../node/state.ts'

export interface ClusterHarness {
  /** Starts n members and returns once every one lists all n alive. */
  start: (n: number) => Promise<void>
  crash: (i: number) => Promise<void>
  pause: (i: number) => Promise<void>
  resume: (i: number) => Promise<void>
  /** A graceful leave (SIGTERM for a process), after which the member is gone. */
  leave: (i: number) => Promise<void>
  /** The same identity started again after a crash or leave. */
  restart: (i: number) => Promise<void>
  /** What member `observer` sees of member `subject`: state and incarnation, or undefined if unknown. */
  view: (observer: number, subject: number) => Promise<{ state: MemberState, incarnation: number } | undefined>
  /** Waits in the harness's own time (virtual or real) until `check` holds; throws with `what` otherwise. */
  waitFor: (what: string, check: () => Promise<boolean>) => Promise<void>
  stop: () => Promise<void>
  /** For failure messages: the seed, the dir. */
  describe: () => string
}

const N = 5

export function membershipConformance (name: string, make: () => ClusterHarness, timeoutMs: number): void {
  describe(`membership conformance: ${name}`, () => {
    let cluster: ClusterHarness
    const running = new Set<number>()

    /** How every running member other than `subject` sees it. */
    const seenBy = async (subject: number): Promise<Array<MemberState | undefined>> =>
      await Promise.all([...running].filter((i) => i !== subject).map(async (i) => (await cluster.view(i, subject))?.state))
    const everywhere = (subject: number, state: MemberState) => async (): Promise<boolean> =>
      (await seenBy(subject)).every((s) => s === state)

    beforeAll(async () => {
      cluster = make()
      await cluster.start(N)
      for (let i = 0; i < N; i++) running.add(i)
    }, timeoutMs)
    afterAll(async () => { await cluster?.stop() }, timeoutMs)

    /** Every member sees every member alive (waited for: a passing suspicion under load is allowed). */
    const allAlive = async (): Promise<void> => {
      await cluster.waitFor('every member to see all alive', async () => {
        for (let i = 0; i < N; i++) {
          for (let j = 0; j < N; j++) if ((await cluster.view(i, j))?.state !== 'alive') return false
        }
        return true
      })
    }

    it('every member sees all members alive', async () => {
      await allAlive()
    }, timeoutMs)

    it('a crashed member is declared dead by all the others', async () => {
      await cluster.crash(4)
      running.delete(4)
      await cluster.waitFor('member 4 dead everywhere', everywhere(4, 'dead'))
    }, timeoutMs)

    it('a frozen member is declared dead, and once thawed refutes with a higher incarnation', async () => {
      const before = (await cluster.view(0, 3))!.incarnation
      await cluster.pause(3)
      running.delete(3)
      await cluster.waitFor('member 3 dead everywhere', everywhere(3, 'dead'))
      await cluster.resume(3)
      running.add(3)
      await cluster.waitFor('member 3 alive everywhere', everywhere(3, 'alive'))
      expect((await cluster.view(0, 3))!.incarnation, cluster.describe()).toBeGreaterThan(before)
    }, timeoutMs)

    it('a member that leaves is marked left by the others, not dead', async () => {
      await cluster.leave(2)
      running.delete(2)
      await cluster.waitFor('member 2 left everywhere', everywhere(2, 'left'))
    }, timeoutMs)

    it('members started again with their old identity are alive everywhere, at a higher incarnation', async () => {
      for (const i of [2, 4]) {
        const before = (await cluster.view(0, i))!.incarnation
        await cluster.restart(i)
        running.add(i)
        await cluster.waitFor(`member ${i} alive everywhere`, everywhere(i, 'alive'))
        expect((await cluster.view(0, i))!.incarnation, cluster.describe()).toBeGreaterThan(before)
      }
      await allAlive()
    }, timeoutMs)
  })
}

// ---- the shared state -------------------------------------------------------------

/** What a node's copy of the shared state shows: read through its API on a real node, from its StateService in the simulator. */
export interface StateView {
  /** The digest of its document (GET /v1/state). */
  digest: string
  /** The ids of every job it knows. */
  jobs: string[]
  stats: StateStats
}

export interface StateHarness {
  /** Starts n nodes and returns once every one lists all n alive. */
  start: (n: number) => Promise<void>
  /** The node process dies (SIGKILL); its disk stays. */
  crash: (i: number) => Promise<void>
  /** The node starts again on the disk it had. */
  restart: (i: number) => Promise<void>
  /** A new node joins through the running ones, with an empty disk; resolves with its index. */
  join: () => Promise<number>
  /** Submits a job through node i (its API on a real node, its jobs service in the simulator); resolves with the job's id once acknowledged. */
  submit: (i: number, job: Record<string, unknown>) => Promise<string>
  state: (i: number) => Promise<StateView>
  /** A peer that is no member gossips these bytes to node i (on the state's topic; what the simulated transport carries as gossip). */
  gossip: (i: number, data: Uint8Array) => Promise<void>
  /** A peer that is no member opens a sync exchange with node i, sends these frames, and reads until the node hangs up. */
  sync: (i: number, frames: Uint8Array[]) => Promise<void>
  waitFor: (what: string, check: () => Promise<boolean>) => Promise<void>
  stop: () => Promise<void>
  describe: () => string
}

/**
 * A job no node may run (no node has the label): a write of the shared state and
 * nothing else, so that nothing but these writes changes the documents.
 */
const idleJob = (name: string): Record<string, unknown> =>
  ({ name, type: 'service', command: 'true', cpu: '10m', memory: '16M', constraints: [{ label: 'conformance.nowhere', op: 'eq', value: 'x' }] })

/**
 * A well-formed Yjs update with a gap: the second change of a writer nobody has
 * heard of, without the first. A fixed writer id, so that the simulator replays.
 */
function updateWithGap (): Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = 0x5eed
  doc.getMap('jobs').set('first', 1)
  const before = Y.encodeStateVector(doc)
  doc.getMap('jobs').set('second', 2)
  return Y.encodeStateAsUpdate(doc, before)
}

const delta = (after: Record<string, number>, before: Record<string, number>, key: string): number => (after[key] ?? 0) - (before[key] ?? 0)

export function stateConformance (name: string, make: () => StateHarness, timeoutMs: number): void {
  describe(`shared state conformance: ${name}`, () => {
    let cluster: StateHarness
    /** The nodes running now. */
    const running = new Set<number>()
    /** Every job written so far: every node must come to know each. */
    const written: string[] = []

    /** Every running node knows every job written, and their documents are equal. */
    const converged = async (): Promise<boolean> => {
      const views = await Promise.all([...running].map(async (i) => await cluster.state(i)))
      return views.every((v) => v.digest === views[0]!.digest && written.every((id) => v.jobs.includes(id)))
    }
    const converge = async (what: string): Promise<void> => { await cluster.waitFor(what, converged) }

    beforeAll(async () => {
      cluster = make()
      // Four, and a fifth joins late.
      await cluster.start(4)
      for (let i = 0; i < 4; i++) running.add(i)
    }, timeoutMs)
    afterAll(async () => { await cluster?.stop() }, timeoutMs)

    it('a write on every node reaches every node, and the documents converge', async () => {
      for (const i of running) written.push(await cluster.submit(i, idleJob(`every-${i}`)))
      await converge('every node to know every job, with equal documents')
    }, timeoutMs)

    it('a node away while the others write catches up when it is back', async () => {
      await cluster.crash(3)
      running.delete(3)
      for (const i of running) written.push(await cluster.submit(i, idleJob(`while-away-${i}`)))
      await converge('the others to agree while node 3 is away')
      await cluster.restart(3)
      running.add(3)
      await converge('node 3 to catch up')
    }, timeoutMs)

    it('a late joiner gets everything', async () => {
      const late = await cluster.join()
      running.add(late)
      await converge(`node ${late}, new, to get every job`)
    }, timeoutMs)

    it('updates from a peer that is not a member are not read, corrupt or not, and harm nothing', async () => {
      const target = 0
      const before = (await cluster.state(target)).stats
      const gap = updateWithGap()
      await cluster.gossip(target, gossipMessage(gap))
      await cluster.gossip(target, gossipMessage(Uint8Array.of(0xde, 0xad, 0xbe, 0xef)))
      const hello = encodeFrame({ type: 'hello', sv: Y.encodeStateVector(new Y.Doc()) })
      await cluster.sync(target, [hello, encodeFrame({ type: 'diff', update: gap })])
      await cluster.sync(target, [hello, encodeFrame({ type: 'diff', update: new Uint8Array(64).fill(7) })])
      // Refused for who sent them, before what they hold is looked at (a member's are judged: test/e2e/state-hostile.test.ts).
      const counts = (s: StateStats): number[] => [delta(s.gossip.dropped, before.gossip.dropped, 'not-a-member'), delta(s.sync.rejected, before.sync.rejected, 'not-a-member')]
      await cluster.waitFor('the four updates to be refused', async () => counts((await cluster.state(target)).stats).every((n) => n >= 2))
      expect(counts((await cluster.state(target)).stats), `gossip dropped, sync rejected: not a member (${cluster.describe()})`).toEqual([2, 2])
      // Nothing of them is in any document, and the cluster goes on: a write on the target reaches everyone.
      await converge('the documents to stay equal')
      written.push(await cluster.submit(target, idleJob('after-the-attack')))
      await converge('a write after the attack to reach every node')
    }, timeoutMs)
  })
}
