// Python shared by the sandbox probes (test/node/sandbox.test.ts, test/e2e/sandbox.test.ts).

/**
 * `attempt(fn)`: calls fn and gives 'ok', or the errno name of the OSError it
 * raised (EACCES, EPERM, ENOENT). Top-level Python; the script must `import errno`.
 */
export const PY_ATTEMPT = String.raw`def attempt(fn):
    try:
        fn()
        return 'ok'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))`
