// TransactWriteItems for dynalite 4.0.0, which has no transactions (the gateway's rollout
// store writes a change and its audit record, or a salt and a check of the rollout, in one).
//
// Put, Delete and ConditionCheck, all or nothing: each item's key is locked with dynalite's
// own per-item locks (in one order, so two transactions cannot deadlock), every condition
// is checked against the items as they are, and only when all hold are the writes applied,
// before any lock is released; otherwise TransactionCanceledException with one
// CancellationReason per item, as DynamoDB answers. Update inside a transaction is refused
// with a ValidationException saying so: nothing here uses it.
'use strict'

const path = require('path')

const TARGET = 'DynamoDB_20120810.TransactWriteItems'
const OPERATIONS = { Put: 'putItem', Delete: 'deleteItem', ConditionCheck: 'deleteItem' }

// `store()`: dynalite's store, as `db.create` made it for this server.
function install (packageDir, server, store) {
  const db = require(path.join(packageDir, 'db'))
  const validations = require(path.join(packageDir, 'validations'))
  const [original] = server.listeners('request')
  server.removeAllListeners('request')
  server.on('request', (req, res) => {
    if (req.method === 'POST' && req.headers['x-amz-target'] === TARGET) {
      readBody(req, (body) => transact(db, validations, store(), packageDir, body, res))
    }
    else {
      original(req, res)
    }
  })
}

function readBody (req, done) {
  const chunks = []
  req.on('data', (chunk) => chunks.push(chunk))
  req.on('end', () => done(Buffer.concat(chunks).toString('utf8')))
}

function send (res, status, body) {
  const text = JSON.stringify(body)
  res.statusCode = status
  res.setHeader('Content-Type', 'application/x-amz-json-1.0')
  res.setHeader('Content-Length', Buffer.byteLength(text))
  res.end(text)
}

function validationError (message) {
  return { status: 400, body: { __type: 'com.amazon.coral.validate#ValidationException', message } }
}

// Each transact item as the single-item action's validated request (expressions parsed).
function parse (validations, packageDir, store, items) {
  if (!Array.isArray(items) || items.length < 1 || items.length > 100) {
    throw validationError('TransactItems must have between 1 and 100 items')
  }
  return items.map((item) => {
    const kinds = Object.keys(item || {})
    if (kinds.length !== 1) throw validationError('Each TransactItem must name one operation')
    const kind = kinds[0]
    if (kind === 'Update') {
      throw validationError('Update in TransactWriteItems is not supported by this local dynalite')
    }
    const action = OPERATIONS[kind]
    if (!action) throw validationError(`Unknown TransactItem operation: ${kind}`)
    const rules = require(path.join(packageDir, 'validations', action))
    let data = { ...item[kind] }
    try {
      data = validations.checkTypes(data, rules.types)
      validations.checkValidations(data, rules.types, rules.custom, store)
    }
    catch (error) {
      if (error.statusCode) throw { status: error.statusCode, body: error.body }
      throw error
    }
    return { kind, data }
  })
}

function transact (db, validations, store, packageDir, body, res) {
  let ops
  try {
    ops = parse(validations, packageDir, store, JSON.parse(body).TransactItems)
  }
  catch (error) {
    if (error && error.status) return send(res, error.status, error.body)
    return send(res, 400, { __type: 'com.amazon.coral.service#SerializationException' })
  }
  const tables = {}
  let pending = ops.length
  let failed = null
  ops.forEach((op) => {
    store.getTable(op.data.TableName, (error, table) => {
      if (error) failed = failed || error
      else tables[op.data.TableName] = table
      if (--pending === 0) {
        if (failed) return send(res, failed.statusCode || 500, failed.body || {})
        lockAndApply(db, store, ops, tables, res)
      }
    })
  })
}

function lockAndApply (db, store, ops, tables, res) {
  const seen = new Set()
  for (const op of ops) {
    const table = tables[op.data.TableName]
    const source = op.kind === 'Put' ? op.data.Item : op.data.Key
    const invalid = op.kind === 'Put' ? db.validateItem(source, table) : db.validateKey(source, table)
    if (invalid) return send(res, invalid.statusCode, invalid.body)
    op.table = table
    op.itemDb = store.getItemDb(op.data.TableName)
    op.key = db.createKey(source, table)
    const id = JSON.stringify([op.data.TableName, op.key])
    if (seen.has(id)) {
      const error = validationError('Transaction request cannot include multiple operations on one item')
      return send(res, error.status, error.body)
    }
    seen.add(id)
    op.id = id
  }
  const order = ops.slice().sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  const releases = []
  const releaseAll = () => { while (releases.length) releases.pop()() }
  const lockNext = (i) => {
    if (i === order.length) return checkAndWrite(db, store, ops, res, releaseAll)
    order[i].itemDb.lock(order[i].key, (release) => {
      releases.push(release(() => {}))
      lockNext(i + 1)
    })
  }
  lockNext(0)
}

function checkAndWrite (db, store, ops, res, releaseAll) {
  let pending = ops.length
  ops.forEach((op) => {
    op.itemDb.get(op.key, (error, existing) => {
      op.existing = error ? undefined : existing
      if (error && error.name !== 'NotFoundError') op.error = error
      if (--pending === 0) decide(db, store, ops, res, releaseAll)
    })
  })
}

function decide (db, store, ops, res, releaseAll) {
  const broken = ops.find((op) => op.error)
  if (broken) {
    releaseAll()
    return send(res, 500, { __type: 'com.amazonaws.dynamodb.v20120810#InternalServerError', message: String(broken.error) })
  }
  const reasons = ops.map((op) => (db.checkConditional(op.data, op.existing) == null
    ? { Code: 'None' }
    : { Code: 'ConditionalCheckFailed', Message: 'The conditional request failed' }))
  if (reasons.some((reason) => reason.Code !== 'None')) {
    releaseAll()
    return send(res, 400, {
      __type: 'com.amazonaws.dynamodb.v20120810#TransactionCanceledException',
      message: `Transaction cancelled, please refer cancellation reasons for specific reasons [${reasons.map((r) => r.Code).join(', ')}]`,
      CancellationReasons: reasons,
    })
  }
  const writes = ops.filter((op) => op.kind !== 'ConditionCheck')
  let pending = writes.length
  let failure = null
  const done = (error) => {
    failure = failure || error
    if (--pending > 0) return
    releaseAll()
    if (failure) return send(res, 500, { __type: 'com.amazonaws.dynamodb.v20120810#InternalServerError', message: String(failure) })
    send(res, 200, {})
  }
  if (pending === 0) { releaseAll(); return send(res, 200, {}) }
  writes.forEach((op) => {
    const item = op.kind === 'Put' ? op.data.Item : null
    db.updateIndexes(store, op.table, op.existing, item, (error) => {
      if (error) return done(error)
      if (item) op.itemDb.put(op.key, item, done)
      else op.itemDb.del(op.key, done)
    })
  })
}

module.exports = { install }
