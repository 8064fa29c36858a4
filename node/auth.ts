// Who is asking: every API request is signed by its user's key (access/request.ts),
// and this node checks it on its own, against the grants in its copy of the state:
// the signature, the time, a replay, the grant (expiry, revocation, its chain up to
// the root key). What the caller may then do is the route's business (`permits`).

import type { Logger } from 'pino'
import { verifyBytes } from '../access/keys.ts'
import {
  AUTH_SCHEME, GRANT_HEADER, type Proof, REQUEST_WINDOW_MS, ReplayCache, type SignedHeader,
  bodyDigest, parseAuthorization, parseToken, proofOf, requestBytes,
} from '../access/request.ts'
import { type Grant, grantSchema } from '../access/statements.ts'
import { type Op, grantProblem, permits } from '../access/verify.ts'
import type { AccessBook } from './access.ts'
import { MurmurError } from './errors.ts'

/** The user behind a request that passed the checks. */
export interface Caller {
  name: string
  grant: Grant
  /**
   * The signed request, to be stored with what it changes (a job, a stop), so every
   * node can check it again; null for a token (read-only).
   */
  proof: Proof | null
  /** The body as signed, for a request whose proof must carry it (a submission, a scale). */
  body: string
}

export interface RequestFacts {
  method: string
  /** The path with its query, as sent. */
  url: string
  host: string | undefined
  /** The port the request came in on: a request signed for another node's address is not this node's. */
  localPort: number | undefined
  authorization: string | undefined
  grantHeader: string | undefined
  body: Buffer | undefined
}

export const AUTH_LIMITS = Object.freeze({
  /** Nonces of writes remembered at once (each for twice the window); past that, writes wait (503). */
  replayEntriesMax: 200_000,
  grantHeaderBytesMax: 64 * 1024,
})

const READING = new Set(['GET', 'HEAD'])

export class RequestAuth {
  private readonly book: AccessBook
  private readonly now: () => number
  private readonly log: Logger
  private readonly replays = new ReplayCache(REQUEST_WINDOW_MS, AUTH_LIMITS.replayEntriesMax)
  /** Stores a grant a caller presented that the state does not hold yet (the first admin's). */
  private readonly learn: (grant: Grant) => Promise<void>

  constructor (init: { book: AccessBook, now: () => number, log: Logger, learn: (grant: Grant) => Promise<void> }) {
    this.book = init.book
    this.now = init.now
    this.log = init.log
    this.learn = init.learn
  }

  /** The caller, or a MurmurError (401, 503) whose one line says what is missing and how to fix it. */
  check (req: RequestFacts): Caller {
    const header = req.authorization
    if (header === undefined || header.trim() === '') {
      throw refuse('UNAUTHENTICATED', "this node answers signed requests only: use the murmur CLI or murmur/client with a user key (--key, MURMUR_USER_KEY, or the context 'murmur testnet up' writes); an admin makes keys with 'murmur user add'")
    }
    const now = this.now()
    if (/^bearer\s/i.test(header)) return this.token(header.replace(/^bearer\s+/i, '').trim(), req.method, now)
    if (!header.startsWith(`${AUTH_SCHEME} `)) throw refuse('UNAUTHENTICATED', `the Authorization header must use the ${AUTH_SCHEME} scheme (a signed request) or Bearer (a token from 'murmur user token')`)
    const signed = parseAuthorization(header)
    if (typeof signed === 'string') throw refuse('BAD_SIGNATURE', `the request's signature header cannot be read: ${signed}`)
    const skew = signed.t - now
    if (Math.abs(skew) > REQUEST_WINDOW_MS) {
      throw refuse('STALE_REQUEST', `the request was signed ${Math.round(Math.abs(skew) / 1000)} s ${skew < 0 ? 'before' : 'after'} this node's time (at most ${REQUEST_WINDOW_MS / 1000} s either way); check the clocks of this machine and the node's (NTP) and send it again`)
    }
    const host = (req.host ?? '').toLowerCase()
    const port = portOf(host)
    if (req.localPort !== undefined && port !== req.localPort) {
      throw refuse('WRONG_NODE', `the request was signed for ${host || 'no host'}, but came in on port ${req.localPort}; sign it for the address you send it to`)
    }
    const grant = this.grantFor(signed, req.grantHeader, now)
    const digest = bodyDigest(req.body ?? new Uint8Array())
    const path = req.url
    if (!verifyBytes(signed.key, requestBytes({ m: req.method.toUpperCase(), h: host, p: path, d: digest, t: signed.t, n: signed.n }), signed.s)) {
      throw refuse('BAD_SIGNATURE', `the request's signature does not verify for key ${short(signed.key)}: it was changed on the way, or signed for another method, address, path or body`)
    }
    if (!READING.has(req.method.toUpperCase())) {
      const admitted = this.replays.admit(signed.key, signed.n, signed.t, now)
      if (admitted === 'replay') throw refuse('REPLAYED', 'this signed request was sent before; each change is signed anew (the CLI does so), a copy is refused')
      if (admitted === 'full') throw new MurmurError('BUSY', 'this node holds too many recent requests to tell a copy from a new one; retry in a few seconds', 1, 503)
    }
    return { name: grant.name, grant, proof: proofOf(signed, { method: req.method.toUpperCase(), host, path, digest }, grant), body: req.body?.toString('utf8') ?? '' }
  }

  /** Refuses with 403 unless the caller may do `op` (in `namespace`); a node without users (null caller) allows everything. */
  static need (caller: Caller | null, op: Op, namespace?: string): void {
    if (caller === null) return
    const denied = permits(caller.grant, op, namespace)
    if (denied !== null) throw new MurmurError('FORBIDDEN', denied, 1, 403)
    if (caller.proof === null && op !== 'read') throw new MurmurError('FORBIDDEN', 'a token only reads; sign changes with your key (the murmur CLI does)', 1, 403)
  }

  private grantFor (signed: SignedHeader, presented: string | undefined, now: number): Grant {
    if (presented !== undefined && presented !== '') {
      const grant = this.presented(presented, signed.key, now)
      if (grant !== null) return grant
    }
    const grants = this.book.grantsOf(signed.key, now)
    if (grants[0] !== undefined) return grants[0]
    throw refuse('UNKNOWN_KEY', this.whyNoGrant(signed.key, now))
  }

  /** A grant sent along with the request: used if it is in force, and stored for the other nodes. */
  private presented (text: string, key: string, now: number): Grant | null {
    if (text.length > AUTH_LIMITS.grantHeaderBytesMax) return null
    let grant: Grant
    try {
      const parsed = grantSchema.safeParse(JSON.parse(Buffer.from(text, 'base64url').toString('utf8')))
      if (!parsed.success) return null
      grant = parsed.data as Grant
    } catch {
      return null
    }
    if (grant.key !== key || grantProblem(grant, now, this.book.trust) !== null) return null
    if (!this.book.has(grant)) {
      this.learn(grant).catch((err: Error) => { this.log.warn({ err: err.message, user: grant.name }, 'could not store a grant a caller presented') })
    }
    return grant
  }

  private whyNoGrant (key: string, now: number): string {
    const users = this.book.users(now).filter((u) => u.key === key)
    const latest = users[0]
    if (latest === undefined) return `no user has key ${short(key)} in this cluster; an admin adds one with 'murmur user add <name> --public-key ${key}'`
    return `user ${latest.name}'s grant for key ${short(key)} is not in force: ${latest.reason ?? latest.status}; an admin can grant it again with 'murmur user add ${latest.name}'`
  }

  private token (token: string, method: string, now: number): Caller {
    if (!READING.has(method.toUpperCase())) throw refuse('READ_ONLY_TOKEN', 'a token only reads; sign changes with your key (the murmur CLI does)', 403)
    const parsed = parseToken(token, now)
    if (typeof parsed === 'string') throw refuse('BAD_TOKEN', `the token is refused: ${parsed}; make a new one with 'murmur user token'`)
    const grant = this.book.grantsOf(parsed.key, now)[0]
    if (grant === undefined) throw refuse('UNKNOWN_KEY', this.whyNoGrant(parsed.key, now))
    return { name: grant.name, grant, proof: null, body: '' }
  }
}

function refuse (code: string, message: string, status = 401): MurmurError {
  return new MurmurError(code, message, 1, status)
}

/** The port of a Host header (80 when it names none). */
function portOf (host: string): number {
  const match = /:(\d{1,5})$/.exec(host)
  return match === null ? 80 : Number(match[1])
}

/** A key as an error line shows it. */
function short (key: string): string {
  return key.length > 24 ? `${key.slice(0, 20)}…` : key
}
