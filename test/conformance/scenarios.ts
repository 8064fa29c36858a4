// One membership suite, two clusters: the simulator (real Swim cores on a
// simulated network and virtual clock) and real node processes on loopback
// (Swim over libp2p). Both must pass the same scenarios with the same
// expectations, so the simulator cannot drift from the real thing (STYLE, habit 3).

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { MemberState } from '../../membership/types.ts'

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
