// jobProblem: a job record is admitted only if its id, name, namespace, spec and
// state follow from the requests its users signed. Every way a member could bend a
// record it did not get from a user is refused; what users did sign is admitted.

import { describe, expect, it } from 'vitest'
import { type UserKey, newKeyPair } from '../../access/keys.ts'
import { type Proof, bodyDigest, parseAuthorization, proofOf, signRequest } from '../../access/request.ts'
import { type Grant, type Revocation, signGrant, signRevocation } from '../../access/statements.ts'
import type { Trust } from '../../access/verify.ts'
import type { JobRecord } from '../../crdt/schema.ts'
import { jobProblem, newJobRecord, scaledJob, signersOf, stoppedJob } from '../../node/jobs/records.ts'
import { normalizeJob } from '../../node/jobs/spec.ts'

const T0 = 1_765_000_000_000
const root = newKeyPair()
const adminPair = newKeyPair()
const admin = signGrant({ name: 'admin', key: adminPair.publicKey, role: 'admin', namespaces: ['*'], runAs: [], issuedAt: T0 - 10_000, expiresAt: null }, { privateKey: root.privateKey, grant: null })
const alice = user('alice', 'submit', ['web'])
const bob = user('bob', 'submit', ['db'])
const reader = user('rita', 'read', ['web'])

function user (name: string, role: Grant['role'], namespaces: string[], runAs: number[] = []): UserKey {
  const pair = newKeyPair()
  const grant = signGrant({ name, key: pair.publicKey, role, namespaces, runAs, issuedAt: T0 - 5_000, expiresAt: null }, { privateKey: adminPair.privateKey, grant: admin })
  return { name, publicKey: pair.publicKey, privateKey: pair.privateKey, grant }
}

function trust (revocations: Revocation[] = []): Trust {
  return { rootKey: root.publicKey, revocations: (name) => revocations.filter((r) => r.name === name) }
}

/** A request as the node stores it: signed by `key` at `t`, with its body. */
function signed (key: UserKey, method: string, path: string, body: string, t: number): Proof {
  const headers = signRequest(key, { method, host: '127.0.0.1:7947', path, body }, t)
  const header = parseAuthorization(headers.authorization!)
  if (typeof header === 'string') throw new Error(header)
  return { ...proofOf(header, { method, host: '127.0.0.1:7947', path, digest: bodyDigest(body) }, key.grant!), body }
}

function submitted (key: UserKey, input: Record<string, unknown>, namespace = 'web', t = T0): JobRecord {
  const body = JSON.stringify(input)
  const proof = signed(key, 'POST', `/v1/jobs?namespace=${namespace}`, body, t)
  return newJobRecord(normalizeJob(input), 'node-a', t, 'unused', { namespace, proof })
}

const web = { name: 'web', type: 'service', command: 'sleep', args: ['60'], count: 2 }

describe('jobProblem', () => {
  it('admits a job, a scale and a stop its users signed, and anything in a cluster without users', () => {
    const job = submitted(alice, web)
    expect(jobProblem(job, trust())).toBeNull()
    expect(job.id).toMatch(/^web-[0-9a-f]{8}$/)
    const scaled = scaledJob(job, 3, T0 + 1_000, signed(alice, 'POST', `/v1/jobs/${job.id}/scale?namespace=web`, '{"count":3}', T0 + 1_000))
    expect(jobProblem(scaled, trust())).toBeNull()
    // Another user of the namespace may stop it, by name too (a request made after the submission).
    const carol = user('carol', 'submit', ['web'])
    const stopped = stoppedJob(scaled, T0 + 2_000, signed(carol, 'POST', '/v1/jobs/web/stop?namespace=web', '', T0 + 2_000))
    expect(jobProblem(stopped, trust())).toBeNull()
    expect(jobProblem({ ...job, proof: undefined }, null)).toBeNull()
  })

  it('refuses every record a member bent: no proof, another spec, id, name, namespace, time, version or state', () => {
    const job = submitted(alice, web)
    const t = trust()
    expect(jobProblem({ ...job, proof: undefined }, t)).toMatch(/no signed submission/)
    expect(jobProblem({ ...job, spec: { ...job.spec, command: 'rm' } }, t)).toMatch(/spec differs/)
    expect(jobProblem({ ...job, spec: { ...job.spec, count: 50 } }, t)).toMatch(/spec differs/)
    expect(jobProblem({ ...job, id: 'web-00000000' }, t)).toMatch(/id/)
    expect(jobProblem({ ...job, namespace: 'db' }, t)).toMatch(/another namespace/)
    expect(jobProblem({ ...job, submittedAt: job.submittedAt + 1 }, t)).toMatch(/time/)
    expect(jobProblem({ ...job, version: 99 }, t)).toMatch(/version/)
    expect(jobProblem({ ...job, desired: 'stopped', finishedAt: T0 + 5 }, t)).toMatch(/no user stopped it/)
    expect(jobProblem({ ...job, finishedAt: T0 + 5 }, t)).toMatch(/only a stop finishes/)
    expect(jobProblem({ ...job, proof: { ...job.proof!, body: JSON.stringify({ ...web, command: 'rm' }) } }, t)).toMatch(/digest|body/)
  })

  it('refuses a stop or scale that is not one a user with the right signed for this job', () => {
    const job = submitted(alice, web)
    const t = trust()
    // bob may submit in db only.
    const byBob = stoppedJob(job, T0 + 1, signed(bob, 'POST', `/v1/jobs/${job.id}/stop?namespace=web`, '', T0 + 1))
    expect(jobProblem(byBob, t)).toMatch(/may not submit in namespace web/)
    const byReader = stoppedJob(job, T0 + 1, signed(reader, 'POST', `/v1/jobs/${job.id}/stop?namespace=web`, '', T0 + 1))
    expect(jobProblem(byReader, t)).toMatch(/rita/)
    // A stop signed for another job, or by name before this job existed (an older job of that name).
    const other = stoppedJob(job, T0 + 1, signed(alice, 'POST', '/v1/jobs/web-12345678/stop?namespace=web', '', T0 + 1))
    expect(jobProblem(other, t)).toMatch(/not for this job/)
    const older = stoppedJob(job, T0 - 1, signed(alice, 'POST', '/v1/jobs/web/stop?namespace=web', '', T0 - 1))
    expect(jobProblem(older, t)).toMatch(/not for this job/)
    // A scale's proof is a scale: a stop's proof does not scale, nor a scale to another count.
    const scaleProof = signed(alice, 'POST', `/v1/jobs/${job.id}/scale?namespace=web`, '{"count":3}', T0 + 1)
    expect(jobProblem({ ...scaledJob(job, 5, T0 + 1), scale: scaleProof, version: T0 + 1 }, t)).toMatch(/spec differs/)
    expect(jobProblem(scaledJob(job, 3, T0 + 1, { ...scaleProof, p: `/v1/jobs/${job.id}/stop?namespace=web` }), t)).toMatch(/not signed|not for this job/)
  })

  it("refuses a runAs the user's grant does not list, and admits one it does", () => {
    expect(jobProblem(submitted(alice, { ...web, runAs: 0 }), trust())).toMatch(/may not run tasks as uid 0/)
    const ops = user('ops', 'submit', ['web'], [0, 1000])
    expect(jobProblem(submitted(ops, { ...web, runAs: 0 }), trust())).toBeNull()
  })

  it('keeps what a user signed before a revocation, and refuses what they signed after it', () => {
    const before = submitted(alice, web, 'web', T0)
    const after = submitted(alice, { ...web, name: 'late' }, 'web', T0 + 60_000)
    const revocation = signRevocation({ name: 'alice', at: T0 + 30_000 }, { privateKey: adminPair.privateKey, grant: admin })
    expect(jobProblem(before, trust([revocation]))).toBeNull()
    expect(jobProblem(after, trust())).toBeNull()
    expect(jobProblem(after, trust([revocation]))).toMatch(/revoked/)
    expect(signersOf(after)).toEqual(['alice', 'admin'])
  })
})
