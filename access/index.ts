// The access module: users' keys, grants, revocations, quotas and signed requests,
// checked by any node on its own. See README.md.

export * from './keys.ts'
export * from './statements.ts'
export * from './request.ts'
export * from './verify.ts'
