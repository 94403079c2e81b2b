// Serve dynalite (in memory) on HOST:PORT and print where it listens, as an export line.
//
//   node serve-dynalite.js PACKAGE_DIR HOST PORT
//
// PORT 0 binds a free port (dynalite's own cli.js treats 0 as "use 4567"). Tables are
// ACTIVE at once instead of after 500 ms in CREATING/DELETING/UPDATING: the local tools
// create many. Stopped by a signal (SIGTERM or SIGINT), Node's default.
//
// One correction to dynalite 4.0.0, so it answers as DynamoDB does: in an update expression
// `REMOVE #l[0], #l[1]` names elements of the list as it was before the update (DynamoDB
// removes the first two), while dynalite removes them one after the other, each index
// counted after the previous removal (it removes the first and the third). The session
// store trims its history so. The update action is wrapped before dynalite loads it: list
// element removals are applied from the highest index of each list down, which removes
// exactly the elements the indexes named in the original list. And one addition:
// TransactWriteItems (Put, Delete, ConditionCheck), which dynalite lacks (transactions.js).
'use strict'

const path = require('path')

const [packageDir, host, port] = process.argv.slice(2)
if (!packageDir || !host || port === undefined) {
  console.error('usage: node serve-dynalite.js PACKAGE_DIR HOST PORT')
  process.exit(2)
}

// Removals of list elements (`path` ends in an index), highest index of each list first;
// every other action keeps its place (DynamoDB refuses overlapping paths in one update).
function originalIndexOrder (sections) {
  const isListRemoval = (section) =>
    section.type === 'remove' && typeof section.path[section.path.length - 1] === 'number'
  const slots = []
  sections.forEach((section, i) => { if (isListRemoval(section)) slots.push(i) })
  if (slots.length < 2) return sections
  const parent = (section) => JSON.stringify(section.path.slice(0, -1))
  const removals = slots.map((i) => sections[i]).sort((a, b) => {
    const [pa, pb] = [parent(a), parent(b)]
    if (pa !== pb) return pa < pb ? -1 : 1
    return b.path[b.path.length - 1] - a.path[a.path.length - 1]
  })
  const ordered = sections.slice()
  slots.forEach((slot, k) => { ordered[slot] = removals[k] })
  return ordered
}

const updateItemPath = require.resolve(path.join(packageDir, 'actions', 'updateItem.js'))
const updateItem = require(updateItemPath)
require.cache[updateItemPath].exports = function updateItemInDynamoDBOrder (store, data, cb) {
  if (data._updates && data._updates.sections) {
    data._updates.sections = originalIndexOrder(data._updates.sections)
  }
  return updateItem(store, data, cb)
}

// dynalite has no TransactWriteItems: transactions.js serves it over dynalite's own store,
// which `db.create` is wrapped to hand over.
const db = require(path.join(packageDir, 'db'))
const create = db.create
let store = null
db.create = function createAndKeep (options) {
  store = create(options)
  return store
}

const dynalite = require(packageDir)
const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 })
require('./transactions').install(packageDir, server, () => store)
server.on('error', (error) => {
  console.error(`dynalite: ${error.message}`)
  process.exit(1)
})
server.listen(Number(port), host, () => {
  const { port: bound } = server.address()
  console.log(`export AWS_ENDPOINT_URL_DYNAMODB=http://${host}:${bound}`)
})
