// `murmur user …`, `murmur namespace …` and `murmur whoami`: users, their grants
// and the namespaces' quotas. Grants, revocations and quotas are signed here, on
// the admin's machine, with the admin's key (or the root key with --as-root); the
// node only checks and stores them. A new user's private key is made here too,
// and never leaves this machine but in the file written for the user.

import { existsSync, readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import type { Command } from 'commander'
import { type UserKey, isPublicKeyText, newKeyPair, encodeUserKey, parsePublicKey, parseRootKey } from '../access/keys.ts'
import { makeToken, TOKEN_TTL_MS_MAX } from '../access/request.ts'
import { type Grant, NAME_RE, NAMESPACE_RE, ROLES, type Role, type Signer, signGrant, signQuota, signRevocation } from '../access/statements.ts'
import { parseCpu, parseDuration, parseSize } from '../node/units.ts'
import { amountText, limitText } from '../placement/escrow.ts'
import { ApiError, type Client, type NamespaceView, type UserView } from './client.ts'
import { writePrivate } from './cluster-files.ts'
import { InputError } from './job-input.ts'
import { table } from './table.ts'

interface JsonFlag { json?: boolean }

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value]

/** The client of the command's target (cli/context.ts) and the key it signs with. */
export type ClientOf = () => Client

export function registerUsers (program: Command, client: ClientOf): void {
  const user = program.command('user').description('users: who may do what (admins only, but whoami and token)')

  user.command('add')
    .description('grant a user a role in namespaces: makes their key pair (or takes --public-key) and stores the grant, signed by you')
    .argument('<name>', 'the user name: a-z, 0-9 and -, starting with a letter')
    .option('--role <role>', `${ROLES.join(', ')}`, 'submit')
    .option('--namespace <ns>', "a namespace the user may work in (repeatable; '*' for all; default: admin and operator all, others the current one)", collect)
    .option('--run-as <uids>', 'uids their tasks may run as besides the default one, e.g. 1000,1001 (0 only if listed)')
    .option('--expires <duration>', 'the grant ends after this long, e.g. 30d or 12h (default: never)')
    .option('--public-key <key>', "the user's own public key (ed25519:…): no key file is made")
    .option('--out <file>', 'where to write the new key file (default: ./<name>.key)')
    .option('--as-root <root.key>', "sign with the cluster's root key instead of your admin key")
    .option('--json', 'print one JSON document')
    .action(async (name: string, flags: { role: string, namespace?: string[], runAs?: string, expires?: string, publicKey?: string, out?: string, asRoot?: string } & JsonFlag) => {
      if (!NAME_RE.test(name)) throw new InputError(`'${name}' is not a user name: a-z, 0-9 and '-', starting with a letter, at most 63`)
      if (!(ROLES as readonly string[]).includes(flags.role)) throw new InputError(`--role must be one of ${ROLES.join(', ')}, got '${flags.role}'`)
      const role = flags.role as Role
      const c = client()
      const namespaces = flags.namespace ?? (role === 'admin' || role === 'operator' ? ['*'] : [c.namespace])
      for (const ns of namespaces) if (ns !== '*' && !NAMESPACE_RE.test(ns)) throw new InputError(`--namespace '${ns}' is not a namespace: a DNS label (a-z, 0-9, '-'), or '*'`)
      const runAs = flags.runAs === undefined ? [] : parseUids(flags.runAs)
      const now = Date.now()
      const expiresAt = flags.expires === undefined ? null : now + flag('--expires', () => parseDuration(flags.expires!))
      let key: { publicKey: string, privateKey: UserKey['privateKey'] | null }
      if (flags.publicKey !== undefined) {
        if (flags.out !== undefined) throw new InputError('--out writes a new key file; with --public-key the user keeps their own key, and no file is made')
        key = { publicKey: asInput(() => parsePublicKey(flags.publicKey!, '--public-key')), privateKey: null }
      } else {
        key = newKeyPair()
      }
      const out = resolve(flags.out ?? `${name}.key`)
      if (key.privateKey !== null && existsSync(out)) throw new InputError(`${out} already exists; give another --out, or remove it first`)
      const signer = await signerOf(c, flags.asRoot)
      const grant = signGrant({ name, key: key.publicKey, role, namespaces, runAs, issuedAt: now, expiresAt }, signer)
      const answer = await c.addUser(grant)
      if (key.privateKey !== null) writePrivate(out, encodeUserKey({ name, publicKey: key.publicKey, privateKey: key.privateKey, grant }), true)
      if (flags.json === true) {
        print(JSON.stringify({ ...answer, keyFile: key.privateKey === null ? null : out }, null, 2))
        return
      }
      print(`user ${name} may ${roleText(role)} in ${namespaceText(namespaces)}${expiresAt === null ? '' : ` until ${new Date(expiresAt).toISOString()}`}`)
      if (key.privateKey !== null) print(`their key: ${out} (mode 0600); hand it over privately. They use it with: murmur --key ${out} …  (or MURMUR_USER_KEY=${out})`)
      else print(`they sign with their own key ${short(key.publicKey)}: murmur --key <their key file> …`)
    })

  user.command('list')
    .description('every grant: user, role, namespaces, issuer, and whether it is in force')
    .option('--json', 'print one JSON document')
    .action(async (flags: JsonFlag) => {
      const { users } = await client().users()
      if (flags.json === true) { print(JSON.stringify({ users }, null, 2)); return }
      print(renderUsers(users))
    })

  user.command('revoke')
    .description("revoke every grant of a user from now on: their requests are refused on every node within seconds; their running jobs keep running until someone stops them")
    .argument('<name>', 'the user')
    .option('--as-root <root.key>', "sign with the cluster's root key instead of your admin key")
    .option('--json', 'print one JSON document')
    .action(async (name: string, flags: { asRoot?: string } & JsonFlag) => {
      if (!NAME_RE.test(name)) throw new InputError(`'${name}' is not a user name`)
      const c = client()
      const revocation = signRevocation({ name, at: Date.now() }, await signerOf(c, flags.asRoot))
      const answer = await c.revokeUser(revocation)
      if (flags.json === true) { print(JSON.stringify(answer, null, 2)); return }
      print(`revoked ${name} (${answer.grants} grant${answer.grants === 1 ? '' : 's'}); their jobs keep running: stop them with 'murmur job stop' if they must not`)
    })

  user.command('token')
    .description('a short-lived read-only token for the web dashboard, made from your key (Authorization: Bearer <token>)')
    .option('--ttl <duration>', 'how long it is good for, at most 24h', '1h')
    .action((flags: { ttl: string }) => {
      const ttl = flag('--ttl', () => parseDuration(flags.ttl))
      if (ttl <= 0 || ttl > TOKEN_TTL_MS_MAX) throw new InputError('--ttl must be more than 0 and at most 24h')
      const key = client().key
      if (key === null) throw new InputError("no user key: give --key <file> or MURMUR_USER_KEY, or start a testnet ('murmur testnet up' makes one)")
      print(makeToken(key, ttl, Date.now()))
    })

  const whoami = async (flags: JsonFlag): Promise<void> => {
    const me = await client().whoami()
    if (flags.json === true) { print(JSON.stringify(me, null, 2)); return }
    if (!me.users) { print('this node has no users: every caller may do everything (an open cluster)'); return }
    print(`${me.name}: ${me.role} in ${namespaceText(me.namespaces)}${me.runAs.length > 0 ? `, tasks may run as uid ${me.runAs.join(', ')}` : ''}${me.expiresAt === null ? '' : `, until ${new Date(me.expiresAt).toISOString()}`} (key ${short(me.key!)})`)
  }
  user.command('whoami').description('who the node takes you for').option('--json', 'print one JSON document').action(whoami)
  program.command('whoami').description('who the node takes you for: user, role, namespaces').option('--json', 'print one JSON document').action(whoami)

  const namespace = program.command('namespace').description('namespaces: their quotas and what they use')
  namespace.command('list')
    .description('the namespaces you may read, with quota and use')
    .option('--json', 'print one JSON document')
    .action(async (flags: JsonFlag) => {
      const { namespaces } = await client().namespaces()
      if (flags.json === true) { print(JSON.stringify({ namespaces }, null, 2)); return }
      print(renderNamespaces(namespaces))
    })
  namespace.command('quota')
    .description('set the quota of a namespace (admins): never exceeded, even while the cluster is partitioned')
    .argument('<namespace>', 'the namespace')
    .option('--cpu <cores>', 'CPU of all its instances together, as cores (4) or millicores (4000m)')
    .option('--memory <size>', 'memory of all its instances together, e.g. 16G')
    .option('--instances <n>', 'instances running at once')
    .option('--as-root <root.key>', "sign with the cluster's root key instead of your admin key")
    .option('--json', 'print one JSON document')
    .action(async (ns: string, flags: { cpu?: string, memory?: string, instances?: string, asRoot?: string } & JsonFlag) => {
      if (!NAMESPACE_RE.test(ns)) throw new InputError(`'${ns}' is not a namespace: a DNS label (a-z, 0-9, '-')`)
      if (flags.cpu === undefined && flags.memory === undefined && flags.instances === undefined) throw new InputError('give at least one of --cpu, --memory, --instances (a dimension left out has no limit)')
      const cpuMillis = flags.cpu === undefined ? null : flag('--cpu', () => parseCpu(flags.cpu!))
      const memoryBytes = flags.memory === undefined ? null : flag('--memory', () => parseSize(flags.memory!))
      const instances = flags.instances === undefined ? null : wholeNumber('--instances', flags.instances)
      const c = client()
      const quota = signQuota({ namespace: ns, cpuMillis, memoryBytes, instances, setAt: Date.now() }, await signerOf(c, flags.asRoot))
      const view = await c.setQuota(quota)
      if (flags.json === true) { print(JSON.stringify(view, null, 2)); return }
      print(`namespace ${ns}: quota ${quotaText(view)}; in use ${useText(view)}`)
    })
}

/** Who signs a grant, revocation or quota: the root key from a file, or the caller's admin key with its grant. */
async function signerOf (c: Client, rootFile: string | undefined): Promise<Signer> {
  if (rootFile !== undefined) {
    let text: string
    try {
      text = readFileSync(rootFile, 'utf8')
    } catch (err) {
      throw new InputError(`--as-root ${rootFile}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}; give the root.key 'murmur cluster init' wrote`)
    }
    return { privateKey: parseRootKey(text, rootFile).privateKey, grant: null }
  }
  const key = c.key
  if (key === null) throw new InputError("no user key to sign with: give --key <admin key file> or MURMUR_USER_KEY, or --as-root <root.key>")
  // A key file made for a user who brought their own key has no grant in it: the node knows it.
  let grant: Grant | null = key.grant
  if (grant === null) grant = (await c.whoami()).grant
  if (grant === null || grant.role !== 'admin') throw new ApiError('FORBIDDEN', `${key.name} is not an admin: only admins sign grants, revocations and quotas`, 403)
  return { privateKey: key.privateKey, grant }
}

export function renderUsers (users: readonly UserView[]): string {
  if (users.length === 0) return 'no users'
  return table(['NAME', 'ROLE', 'NAMESPACES', 'RUN-AS', 'EXPIRES', 'ISSUER', 'STATUS', 'KEY'], users.map((u) => [
    u.name, u.role, u.namespaces.join(','), u.runAs.length === 0 ? '-' : u.runAs.join(','),
    u.expiresAt === null ? 'never' : new Date(u.expiresAt).toISOString(), u.issuer, u.status, short(u.key),
  ]))
}

export function renderNamespaces (namespaces: readonly NamespaceView[]): string {
  return table(['NAMESPACE', 'JOBS', 'QUOTA', 'IN USE'], namespaces.map((n) => [n.name, String(n.jobs), quotaText(n), useText(n)]))
}

function quotaText (n: NamespaceView): string {
  return n.quota === null ? 'none' : limitText(n.quota.limit)
}

function useText (n: NamespaceView): string {
  return amountText(n.use)
}

function roleText (role: Role): string {
  return role === 'admin' ? 'do everything' : role === 'operator' ? 'operate nodes and read' : role === 'submit' ? 'submit and stop jobs' : 'read'
}

function namespaceText (namespaces: readonly string[]): string {
  return namespaces.includes('*') ? 'every namespace' : `namespace${namespaces.length === 1 ? '' : 's'} ${namespaces.join(', ')}`
}

function short (key: string): string {
  return isPublicKeyText(key) ? `${key.slice(0, 16)}…` : key
}

function parseUids (text: string): number[] {
  const out: number[] = []
  for (const part of text.split(',')) {
    const uid = wholeNumber('--run-as', part.trim())
    if (uid > 4_294_967_294) throw new InputError(`--run-as: ${uid} is not a uid (at most 4294967294)`)
    out.push(uid)
  }
  return [...new Set(out)]
}

function wholeNumber (name: string, text: string): number {
  if (!/^\d{1,10}$/.test(text)) throw new InputError(`${name} must be a whole number, got '${text}'`)
  return Number(text)
}

/** An error whose message already names the flag (parsePublicKey's), as an InputError: no second prefix. */
function asInput<T> (parse: () => T): T {
  try {
    return parse()
  } catch (err) {
    throw new InputError((err as Error).message)
  }
}

function flag<T> (name: string, parse: () => T): T {
  try {
    return parse()
  } catch (err) {
    throw new InputError(`${name}: ${(err as Error).message}`)
  }
}

function print (text: string): void {
  process.stdout.write(text + '\n')
}
