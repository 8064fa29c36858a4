// Errors a user can act on: one line that says what is wrong and what to do,
// and the exit code the CLI should end with (1 the operation failed, 2 the input was wrong).

export class MurmurError extends Error {
  override name = 'MurmurError'
  readonly code: string
  readonly exitCode: 1 | 2
  /** The HTTP status the API answers with: 400 for bad input, 500 otherwise, unless given. */
  readonly httpStatus: number

  constructor (code: string, message: string, exitCode: 1 | 2 = 1, httpStatus?: number) {
    super(message)
    this.code = code
    this.exitCode = exitCode
    this.httpStatus = httpStatus ?? (exitCode === 2 ? 400 : 500)
  }
}

/** The input was wrong: a flag, a file, a value. */
export class InputError extends MurmurError {
  override name = 'InputError'
  constructor (code: string, message: string) {
    super(code, message, 2)
  }
}
