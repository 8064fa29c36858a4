// Membership that cannot be forged: each rule of the admit check, with members
// that sign with real Ed25519 keys (their ids are their peer ids), and one
// "mallory" that holds a key of its own and is a member like the others — as a
// key holder of a closed cluster that misbehaves would be.

import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { beforeAll, describe, expect, it } from 'vitest'
import { SIM, membershipConfig } from '../../membership/config.ts'
import { signStatement } from '../../membership/statements.ts'
import { nodeKeys, statementKeys } from '../../node/keys.ts'
import { INCARNATION_MAX, Swim } from '../../membership/swim.ts'
import type { MemberRecord, Message, Update } from '../../membership/types.ts'
import { Rng } from '../../testnet/sim/rng.ts'
import { makeSwim, meta, mesh, run, wire } from './helpers.ts'

const privateKeys: PrivateKey[] = []
beforeAll(async () => {
  for (let i = 0; i < 4; i++) privateKeys.push(await generateKeyPair('Ed25519'))
})

function signedSwim (key: PrivateKey, options: { incarnation?: number, nowMs?: number } = {}): Swim {
  const id = peerIdFromPrivateKey(key).toString()
  const rng = new Rng(`signed/${id}`)
  return new Swim({
    self: { id, addrs: [`sim://${id}`], meta: meta() },
    config: membershipConfig({ newcomerGraceMs: 0 }, SIM),
    random: () => rng.next(),
    nowMs: options.nowMs ?? 0,
    keys: statementKeys(nodeKeys(key)),
    ...(options.incarnation === undefined ? {} : { incarnation: options.incarnation }),
  })
}

/** a, b, c and mallory, all members of one another, each signing with its own key. */
function cluster (): { a: Swim, b: Swim, c: Swim, mallory: Swim, all: Swim[] } {
  const [a, b, c, mallory] = privateKeys.map((key) => signedSwim(key)) as [Swim, Swim, Swim, Swim]
  const all = [a, b, c, mallory]
  mesh(all)
  return { a, b, c, mallory, all }
}

function gossip (...updates: Update[]): Message {
  return wire({ type: 'gossip', updates })
}

function pushPull (...members: MemberRecord[]): Message {
  return wire({ type: 'push-pull', join: false, reply: false, members })
}

function recordOf (swim: Swim, id: string, change: Partial<MemberRecord> = {}): MemberRecord {
  const member = swim.member(id)!
  return { id, addrs: member.addrs, incarnation: member.incarnation, state: member.state, meta: member.meta, ...change }
}

function refusals (swim: Swim): Array<{ reason: string, id?: string }> {
  return swim.drain().refused.map(({ reason, id }) => ({ reason, ...(id === undefined ? {} : { id }) }))
}

describe('signed self statements', () => {
  it('members that sign know each other, and a suspicion is refuted by a signed alive that everyone takes', () => {
    const { a, b, c, all } = cluster()
    for (const swim of all) expect(swim.list().filter((m) => m.state === 'alive')).toHaveLength(4)
    b.receive(c.id, gossip({ kind: 'suspect', id: a.id, incarnation: 0, from: c.id }), 10)
    expect(b.member(a.id)?.state).toBe('suspect')
    run(all, 10, 1_000)
    for (const swim of [b, c]) expect(swim.member(a.id)).toMatchObject({ state: 'alive', incarnation: 1 })
    for (const swim of all) expect(swim.drain().refused).toEqual([])
  })

  it('a forged "left" for another member changes nothing, by gossip or by push-pull', () => {
    const { a, b, mallory } = cluster()
    const inc = a.member(b.id)!.incarnation
    a.receive(mallory.id, gossip({ kind: 'left', id: b.id, incarnation: inc + 1 }), 10)
    a.receive(mallory.id, gossip({ kind: 'left', id: b.id, incarnation: inc + 1, sig: signStatement(statementKeys(nodeKeys(privateKeys[3]!)), { kind: 'left', id: b.id, incarnation: inc + 1 }) }), 11)
    a.receive(mallory.id, pushPull(recordOf(a, b.id, { state: 'left', incarnation: inc + 1 })), 12)
    // At the incarnation that once expelled a member for good.
    a.receive(mallory.id, pushPull(recordOf(a, b.id, { state: 'left', incarnation: 2 ** 53 - 2 })), 13)
    expect(a.member(b.id)).toMatchObject({ state: 'alive', incarnation: inc })
    expect(refusals(a)).toEqual([
      { reason: 'bad-signature', id: b.id }, { reason: 'bad-signature', id: b.id }, { reason: 'bad-signature', id: b.id }, { reason: 'incarnation-cap', id: b.id },
    ])
  })

  it('a genuine "left", relayed by anyone, is taken', () => {
    const { a, b, c, mallory } = cluster()
    c.leave(20)
    const goodbye = c.drain().messages.find((m) => m.message.type === 'gossip')!.message
    // Relayed by mallory (it is c's own signature, whoever carries it), and in a push-pull record.
    a.receive(mallory.id, wire(goodbye), 21)
    expect(a.member(c.id)?.state).toBe('left')
    const sig = goodbye.type === 'gossip' && goodbye.updates[0]?.kind === 'left' ? goodbye.updates[0].sig : undefined
    b.receive(mallory.id, pushPull(recordOf(a, c.id, { sig })), 22)
    expect(b.member(c.id)?.state).toBe('left')
    expect([...refusals(a), ...refusals(b)]).toEqual([])
  })

  it('a relayed genuine alive at a higher incarnation is taken; a forged one is not', () => {
    const { a, b, c, mallory } = cluster()
    c.updateSelf({ meta: meta(2000) })
    c.drain()
    const genuine = c.ownRecord()
    a.receive(mallory.id, pushPull(genuine), 30)
    expect(a.member(c.id)).toMatchObject({ state: 'alive', incarnation: 1, meta: { cpuMillis: 2000 } })
    // Mallory's own take on c: new addresses, a higher incarnation, no valid signature.
    b.receive(mallory.id, gossip({ kind: 'alive', id: c.id, incarnation: 2, addrs: ['/ip4/10.6.6.6/tcp/1'], meta: meta(64_000) }), 31)
    b.receive(mallory.id, gossip({ kind: 'alive', id: c.id, incarnation: 2, addrs: ['/ip4/10.6.6.6/tcp/1'], meta: meta(64_000), sig: genuine.sig }), 32)
    expect(b.member(c.id)).toMatchObject({ incarnation: 0, addrs: [`sim://${c.id}`] })
    expect(refusals(b)).toEqual([{ reason: 'bad-signature', id: c.id }, { reason: 'bad-signature', id: c.id }])
  })

  it('a suspicion at a huge incarnation changes nothing, not even the suspect\'s own incarnation', () => {
    const { a, b, mallory } = cluster()
    for (const incarnation of [2 ** 53 - 3, INCARNATION_MAX - 1, 5]) {
      a.receive(mallory.id, gossip({ kind: 'suspect', id: b.id, incarnation, from: mallory.id }), 40)
      a.receive(mallory.id, pushPull(recordOf(a, b.id, { state: 'dead', incarnation })), 41)
    }
    expect(a.member(b.id)).toMatchObject({ state: 'alive', incarnation: 0 })
    expect(refusals(a).map((r) => r.reason)).toEqual(['incarnation-cap', 'incarnation-cap', 'incarnation-unstated', 'incarnation-unstated', 'incarnation-unstated', 'incarnation-unstated'])
    // Told to b itself: nobody else takes it, so b has nothing to answer (each answer would be one step up for a liar).
    for (const incarnation of [INCARNATION_MAX - 1, 1, 2]) {
      b.receive(mallory.id, gossip({ kind: 'suspect', id: b.id, incarnation, from: mallory.id }), 42)
      b.receive(mallory.id, pushPull(recordOf(a, b.id, { state: 'dead', incarnation })), 43)
    }
    expect(b.member(b.id)?.incarnation).toBe(0)
    expect(refusals(b).map((r) => r.reason)).toEqual(Array(6).fill('incarnation-unstated'))
    // At its own incarnation, a suspicion is answered as SWIM does: one step.
    b.receive(mallory.id, gossip({ kind: 'suspect', id: b.id, incarnation: 0, from: mallory.id }), 44)
    expect(b.member(b.id)?.incarnation).toBe(1)
  })

  it('a relayed alive that jumps more than incarnationJumpMax is refused; from the member itself it is taken', () => {
    const far = SIM.incarnationJumpMax + 1
    const jumper = signedSwim(privateKeys[2]!, { incarnation: far })
    const { a, b, c, mallory } = cluster()
    expect(c.id).toBe(jumper.id)
    a.receive(mallory.id, pushPull(jumper.ownRecord()), 50)
    expect(a.member(c.id)?.incarnation).toBe(0)
    expect(refusals(a)).toEqual([{ reason: 'incarnation-jump', id: c.id }])
    a.receive(c.id, pushPull(jumper.ownRecord()), 51)
    expect(a.member(c.id)?.incarnation).toBe(far)
    // Within the bound, anyone may relay it.
    b.receive(mallory.id, pushPull(signedSwim(privateKeys[2]!, { incarnation: SIM.incarnationJumpMax }).ownRecord()), 52)
    expect(b.member(c.id)?.incarnation).toBe(SIM.incarnationJumpMax)
  })

  it('the cap always leaves room to refute: a member one below it is suspected, refutes, and everyone takes it', () => {
    const { a, b, mallory } = cluster()
    const high = signedSwim(privateKeys[1]!, { incarnation: INCARNATION_MAX - 1 })
    a.receive(b.id, pushPull(high.ownRecord()), 60)
    expect(a.member(b.id)?.incarnation).toBe(INCARNATION_MAX - 1)
    a.receive(mallory.id, gossip({ kind: 'suspect', id: b.id, incarnation: INCARNATION_MAX - 1, from: mallory.id }), 61)
    expect(a.member(b.id)?.state).toBe('suspect')
    // high knows nobody yet: the suspicion comes to it in a push-pull record, as from a stranger.
    high.receive(mallory.id, pushPull(recordOf(a, b.id)), 61)
    expect(high.member(b.id)?.incarnation).toBe(INCARNATION_MAX)
    a.receive(b.id, pushPull(high.ownRecord()), 62)
    expect(a.member(b.id)).toMatchObject({ state: 'alive', incarnation: INCARNATION_MAX })
    // At the cap, nobody may suspect it by gossip any more: it could not answer.
    a.receive(mallory.id, gossip({ kind: 'suspect', id: b.id, incarnation: INCARNATION_MAX, from: mallory.id }), 63)
    expect(a.member(b.id)?.state).toBe('alive')
  })

  it('a restarted member outbids the signed record of its previous life', () => {
    const { a, b } = cluster()
    const old = signedSwim(privateKeys[1]!, { incarnation: 500 })
    a.receive(b.id, pushPull(old.ownRecord()), 70)
    expect(a.member(b.id)?.incarnation).toBe(500)
    const reborn = signedSwim(privateKeys[1]!, { nowMs: 80 })
    reborn.receive(a.id, pushPull(a.ownRecord(), recordOf(a, b.id, { sig: old.ownRecord().sig })), 80)
    expect(reborn.member(reborn.id)?.incarnation).toBe(501)
    // Held dead at its previous incarnation: the record still carries that life's signed alive.
    const again = signedSwim(privateKeys[1]!, { nowMs: 90 })
    again.receive(a.id, pushPull(a.ownRecord(), recordOf(a, b.id, { state: 'dead', sig: old.ownRecord().sig })), 90)
    expect(again.member(again.id)?.incarnation).toBe(501)
  })

  it('a member that left gracefully comes back: its signed goodbye reaches its next life, which outbids it', () => {
    const { a, b, c } = cluster()
    b.leave(10)
    const sent = run([a, b, c], 10, 500)
    expect(sent.length).toBeGreaterThan(0)
    expect(a.member(b.id)?.state).toBe('left')
    const reborn = signedSwim(privateKeys[1]!, { nowMs: 600 })
    reborn.join([`sim://${a.id}`])
    run([a, reborn, c], 600, 3_000)
    for (const swim of [a, c, reborn]) expect(swim.member(b.id), swim.id).toMatchObject({ state: 'alive' })
    expect(a.member(b.id)!.incarnation).toBeGreaterThan(1)
  })
})

describe('without keys (the simulator)', () => {
  it('refuses suspicions beyond the jump bound and above the cap, and relayed alives beyond the jump bound', () => {
    const a = makeSwim('a')
    mesh([a, makeSwim('b'), makeSwim('c')])
    a.receive('c', gossip({ kind: 'suspect', id: 'b', incarnation: SIM.incarnationJumpMax + 1, from: 'c' }), 10)
    a.receive('c', gossip({ kind: 'suspect', id: 'b', incarnation: 2 ** 53 - 3, from: 'c' }), 11)
    a.receive('c', gossip({ kind: 'alive', id: 'b', incarnation: SIM.incarnationJumpMax + 1, addrs: ['sim://b'], meta: meta() }), 12)
    expect(a.member('b')).toMatchObject({ state: 'alive', incarnation: 0 })
    expect(refusals(a).map((r) => r.reason)).toEqual(['incarnation-jump', 'incarnation-cap', 'incarnation-jump'])
    a.receive('b', gossip({ kind: 'alive', id: 'b', incarnation: SIM.incarnationJumpMax + 1, addrs: ['sim://b'], meta: meta() }), 13)
    expect(a.member('b')?.incarnation).toBe(SIM.incarnationJumpMax + 1)
  })
})
