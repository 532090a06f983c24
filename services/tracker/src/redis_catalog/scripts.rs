//! The Lua scripts: each runs atomically on one hash slot (its declared
//! keys, and keys it names from a prefix of that same slot). Bits are
//! changed by BITOP on whole strings, never bit by bit in Lua.

use std::sync::LazyLock;

use redis::Script;

/// Helpers every script may use: the Redis clock in milliseconds, a
/// constant-time comparison, and a session check.
macro_rules! prelude {
    () => {
        r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Equal strings, in a time that depends only on their length (a token
-- hash is always 32 bytes).
local function ct_eq(a, b)
  if not a or #a ~= #b then return false end
  local d = 0
  for i = 1, #a do d = bit.bor(d, bit.bxor(string.byte(a, i), string.byte(b, i))) end
  return d == 0
end
-- nil if the session behind s (hash) and l (liveness) is live and token
-- is its token; else why not.
local function auth(s, l, token)
  if redis.call('EXISTS', l) == 0 then return 'gone' end
  if not ct_eq(redis.call('HGET', s, 'token'), token) then return 'mismatch' end
  return nil
end
-- Ends session id of bucket prefix p: returns {id, addr, token, files}.
local function claim(p, d, id)
  local s, l, f = p .. 's:' .. id, p .. 'l:' .. id, p .. 'f:' .. id
  local v = redis.call('HMGET', s, 'addr', 'token')
  local files = redis.call('SMEMBERS', f)
  redis.call('DEL', s, l, f)
  redis.call('ZREM', d, id)
  return {id, v[1] or '', v[2] or '', files}
end
"#
    };
}

/// Helpers of the scripts on a file's slot: its holder records and its
/// count planes (see the module's doc for the layout).
macro_rules! holdings {
    () => {
        r#"
local ID_LEN = 16
local MAX_PLANES = 32
-- The key prefix of the file whose key is k ('hv:f:{T}:').
local function prefix(k)
  return string.sub(k, 1, #k - 1)
end
-- id's record index and bitmap in the file of prefix p, or nil and ''.
local function record(p, rec, id)
  local i = redis.call('HGET', p .. 'x', id)
  if not i then return nil, '' end
  i = tonumber(i)
  return i, redis.call('GETRANGE', p .. 'r', i * rec + ID_LEN, (i + 1) * rec - 1)
end
-- Adds one to (sub: takes one from) the count of every chunk whose bit is
-- set in the string at `carry`, on the count planes p..'c0', p..'c1', ...
-- (bit k of plane j is bit j of chunk k's count): a ripple-carry over
-- whole strings, two or three BITOPs a plane, up the planes only while
-- something carries. Deletes `carry` and `spare`.
local function ripple(p, carry, spare, sub)
  local j = 0
  while j < MAX_PLANES and redis.call('BITPOS', carry, 1) ~= -1 do
    local c = p .. 'c' .. j
    redis.call('BITOP', 'AND', spare, c, carry)
    redis.call('BITOP', 'XOR', c, c, carry)
    -- Adding carries where the bit was 1; taking away borrows where it was 0.
    if sub then redis.call('BITOP', 'XOR', spare, spare, carry) end
    carry, spare = spare, carry
    j = j + 1
  end
  redis.call('DEL', carry, spare)
end
-- The Redis bit offset (most significant first) of chunk position k in a
-- bitmap (least significant first, as on the wire) from byte base on.
local function bit_at(base, k)
  return (base + math.floor(k / 8)) * 8 + 7 - k % 8
end
-- Adds d (1 or -1) to the counts of the chunks at Redis bit offsets offs
-- of the planes: one BITFIELD INCRBY u1 per plane (wrapping), up the
-- planes while any chunk carries (its bit wrapped to 0 when adding, to 1
-- when taking away).
local function carry(p, offs, d)
  local j = 0
  while #offs > 0 and j < MAX_PLANES do
    local args = {p .. 'c' .. j, 'OVERFLOW', 'WRAP'}
    for _, o in ipairs(offs) do
      args[#args + 1] = 'INCRBY'; args[#args + 1] = 'u1'
      args[#args + 1] = o; args[#args + 1] = d
    end
    local got = redis.call('BITFIELD', unpack(args))
    local up = {}
    for n, o in ipairs(offs) do
      if got[n] == (d == 1 and 0 or 1) then up[#up + 1] = o end
    end
    offs, j = up, j + 1
  end
end
-- Sets the chunks listed in adds and clears those in drops (positions,
-- space-separated, disjoint) in the record bitmap from byte base of the
-- records, with one BITFIELD that answers the old bits; carries the
-- chunks that changed on the planes. Returns the chunks the record (len
-- bytes) holds.
local function flip(p, base, len, adds, drops)
  local args, want, at = {p .. 'r'}, {}, {}
  for _, lv in ipairs({{adds, 1}, {drops, 0}}) do
    local v = lv[2]
    for k in string.gmatch(lv[1], '%d+') do
      k = tonumber(k)
      args[#args + 1] = 'SET'; args[#args + 1] = 'u1'
      args[#args + 1] = bit_at(base, k); args[#args + 1] = v
      want[#want + 1] = v
      at[#at + 1] = bit_at(0, k)
    end
  end
  local olds = redis.call('BITFIELD', unpack(args))
  local gained, lost = {}, {}
  for n, v in ipairs(want) do
    if olds[n] ~= v then
      if v == 1 then gained[#gained + 1] = at[n] else lost[#lost + 1] = at[n] end
    end
  end
  carry(p, gained, 1)
  carry(p, lost, -1)
  return redis.call('BITCOUNT', p .. 'r', base, base + len - 1)
end
-- id's holding (record index i or nil, bitmap old) becomes the bitmap new,
-- or goes (new false): the record written, appended or swap-removed (the
-- last record takes its place; records stay dense, 0..n-1 in x), the
-- planes changed by the chunks gained and lost. Returns the time the file
-- became orphaned when it has no holder left, else ''.
local function hold(p, m, rec, id, i, old, new)
  local r, x = p .. 'r', p .. 'x'
  local a, b, d = p .. 't1', p .. 't2', p .. 't3'
  redis.call('SET', a, old)
  redis.call('SET', b, new or '')
  redis.call('BITOP', 'XOR', d, a, b)
  redis.call('BITOP', 'AND', b, b, d)
  redis.call('BITOP', 'AND', a, a, d)
  ripple(p, b, d, false)
  ripple(p, a, d, true)
  if new then
    if i then
      redis.call('SETRANGE', r, i * rec + ID_LEN, new)
    else
      local n = redis.call('HLEN', x)
      redis.call('SETRANGE', r, n * rec, id .. new)
      redis.call('HSET', x, id, n)
    end
    redis.call('HDEL', m, 'orphaned')
    return ''
  end
  if not i then return '' end
  local last = redis.call('HLEN', x) - 1
  if i < last then
    local moved = redis.call('GETRANGE', r, last * rec, (last + 1) * rec - 1)
    redis.call('SETRANGE', r, i * rec, moved)
    redis.call('HSET', x, string.sub(moved, 1, ID_LEN), i)
  end
  redis.call('HDEL', x, id)
  if last == 0 then
    redis.call('DEL', r)
    local o = redis.call('HGET', m, 'orphaned')
    if not o then o = tostring(now_ms()); redis.call('HSET', m, 'orphaned', o) end
    return o
  end
  -- Strings never shrink by themselves: past twice the records in use,
  -- the string is cut back to them.
  if redis.call('STRLEN', r) > 2 * last * rec then
    redis.call('SET', r, redis.call('GETRANGE', r, 0, last * rec - 1))
  end
  return ''
end
"#
    };
}

fn script(body: &str) -> Script {
    Script::new(&format!("{}{}", prelude!(), body))
}

fn file_script(body: &str) -> Script {
    Script::new(&format!("{}{}{}", prelude!(), holdings!(), body))
}

/// KEYS: s, l. ARGV: token hash, ttl ms. Returns 'ok', 'gone' or 'mismatch'.
pub static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local e = auth(KEYS[1], KEYS[2], ARGV[1])
if e then return e end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 'ok'
"#,
    )
});

/// KEYS: s, l, f. ARGV: token hash, names offered. Returns {'ok', addr,
/// files held, offered names not held} or {why}.
pub static SESSION: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local e = auth(KEYS[1], KEYS[2], ARGV[1])
if e then return {e} end
local new = 0
for i = 2, #ARGV do
  if redis.call('SISMEMBER', KEYS[3], ARGV[i]) == 0 then new = new + 1 end
end
return {'ok', redis.call('HGET', KEYS[1], 'addr') or '', tostring(redis.call('SCARD', KEYS[3])), tostring(new)}
"#,
    )
});

/// KEYS: s, l, f. ARGV: token hash, name ('' for none), 1 to check the
/// files-per-peer quota, the quota. Adds the name to the peer's files
/// when it is not there. Returns 'added', 'ok', 'quota', 'gone' or
/// 'mismatch'.
pub static CHUNK_AUTH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local e = auth(KEYS[1], KEYS[2], ARGV[1])
if e then return e end
if ARGV[2] == '' or redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 then return 'ok' end
if ARGV[3] == '1' and redis.call('SCARD', KEYS[3]) + 1 > tonumber(ARGV[4]) then return 'quota' end
redis.call('SADD', KEYS[3], ARGV[2])
return 'added'
"#,
    )
});

/// KEYS: s, l, f, d. ARGV: token hash, id. Ends the session: returns
/// {'ok', {id, addr, token, files}} or {why}.
pub static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local e = auth(KEYS[1], KEYS[2], ARGV[1])
if e then return {e} end
local p = string.sub(KEYS[4], 1, #KEYS[4] - 1)
return {'ok', claim(p, KEYS[4], ARGV[2])}
"#,
    )
});

/// KEYS: s, l, d. ARGV: id, addr, token hash, ttl ms, the member that
/// registers it ('' on plaintext). A new session.
pub static OPEN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
redis.call('HSET', KEYS[1], 'addr', ARGV[2], 'token', ARGV[3])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'member', ARGV[5]) end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[3], now_ms() + tonumber(ARGV[4]), ARGV[1])
return 'ok'
"#,
    )
});

/// KEYS: s, l. The member of the live session behind them ('' if it has
/// none), or nil if it is not live.
pub static HOLDER: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('EXISTS', KEYS[2]) == 0 then return false end
return redis.call('HGET', KEYS[1], 'member') or ''
"#,
    )
});

/// KEYS: an address index. ARGV: the id it is expected to hold ('' for
/// none), a new id. Points it at the new id if it holds the expected one:
/// {'ok'}; else {'moved', the id it holds ('' for none)}.
pub static TAKE_ADDR: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local cur = redis.call('GET', KEYS[1]) or ''
-- Already ours: this call ran before and its answer was lost (a retry).
if cur == ARGV[2] then return {'ok'} end
if cur ~= ARGV[1] then return {'moved', cur} end
redis.call('SET', KEYS[1], ARGV[2])
return {'ok'}
"#,
    )
});

/// KEYS: d. ARGV: id. Ends a session whatever its token (a new session at
/// its address replaced it): {{id, addr, token, files}}, or {} if none.
pub static EVICT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local p = string.sub(KEYS[1], 1, #KEYS[1] - 1)
if redis.call('EXISTS', p .. 's:' .. ARGV[1]) == 0 then return {} end
return {claim(p, KEYS[1], ARGV[1])}
"#,
    )
});

/// KEYS: d. ARGV: how many at most. Claims the bucket's sessions past
/// their deadline whose liveness key is gone (a heartbeat only extends
/// the liveness key; the deadline catches up here). Atomic, so each
/// session is claimed by exactly one sweeper. Returns a list of
/// {id, addr, token, files}.
pub static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local p = string.sub(KEYS[1], 1, #KEYS[1] - 1)
local now = now_ms()
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])) do
  local ttl = redis.call('PTTL', p .. 'l:' .. id)
  if ttl > 0 then
    redis.call('ZADD', KEYS[1], now + ttl, id)
  else
    out[#out + 1] = claim(p, KEYS[1], id)
  end
end
return out
"#,
    )
});

/// KEYS: m, x. ARGV: name, manifest, digest, layout, id, bitmap, '1' to
/// drop the holding, the host charged for a new file, its charge (bytes).
/// Creates the file if new, refuses other content, then sets or drops the
/// holding. Returns {'ok', created, orphaned since ('' if held)},
/// {'conflict', digest, layout} or {'collision'}.
pub static PUT: LazyLock<Script> = LazyLock::new(|| {
    file_script(
        r#"
local created = '0'
local v = redis.call('HMGET', KEYS[1], 'name', 'digest', 'layout', 'rec')
if not v[2] then
  local count = tonumber(string.match(ARGV[4], '^(%d+):'))
  v[4] = ID_LEN + math.floor((count + 7) / 8)
  redis.call('HSET', KEYS[1], 'name', ARGV[1], 'manifest', ARGV[2], 'digest', ARGV[3],
    'layout', ARGV[4], 'rec', v[4], 'orphaned', now_ms(), 'host', ARGV[8], 'cost', ARGV[9])
  created = '1'
elseif v[1] ~= ARGV[1] then
  return {'collision'}
elseif v[2] ~= ARGV[3] or v[3] ~= ARGV[4] then
  return {'conflict', v[2], v[3]}
end
local p = prefix(KEYS[1])
local rec = tonumber(v[4])
local i, old = record(p, rec, ARGV[5])
local new = ARGV[6]
if ARGV[7] == '1' then new = false end
return {'ok', created, hold(p, KEYS[1], rec, ARGV[5], i, old, new)}
"#,
    )
});

/// KEYS: m, x. ARGV: digest the chunks were checked against, id, add
/// bitmap, remove bitmap (both the file's length), and the same two sets
/// as lists of chunk positions (decimal, space-separated, disjoint) when
/// the change is small, else ''. new = (old | add) & ~remove; no chunk of
/// a file with chunks drops the holding. Returns {'ok', chunks held,
/// orphaned since or '', and 'in place' when the holding stayed and only
/// its chunks changed}, {'unknown'} or {'stale'}.
///
/// A small change to an existing record (the usual RegisterChunk: a few
/// chunks just fetched) sets its bits with one BITFIELD on the records,
/// which answers the old bits, and carries the chunks that changed up the
/// count planes with one BITFIELD INCRBY per plane while any carries
/// (about two commands a plane for a chunk's whole count). Otherwise the
/// bits are combined and counted by BITOP and BITCOUNT on scratch keys of
/// the file's slot, never in Lua.
pub static CHUNKS: LazyLock<Script> = LazyLock::new(|| {
    file_script(
        r#"
local v = redis.call('HMGET', KEYS[1], 'digest', 'rec')
if not v[1] then return {'unknown'} end
if v[1] ~= ARGV[1] then return {'stale'} end
local p = prefix(KEYS[1])
local rec = tonumber(v[2])
local small = ARGV[5] ~= '' or ARGV[6] ~= ''
local at = small and redis.call('HGET', KEYS[2], ARGV[2])
if at then
  local i = tonumber(at)
  local held = flip(p, i * rec + ID_LEN, rec - ID_LEN, ARGV[5], ARGV[6])
  if held == 0 and #ARGV[3] > 0 then
    -- Its bits are all clear now: the record goes, the planes as they are.
    return {'ok', '0', hold(p, KEYS[1], rec, ARGV[2], i, string.rep('\0', rec - ID_LEN), false)}
  end
  return {'ok', tostring(held), '', 'in place'}
end
local i, old = record(p, rec, ARGV[2])
local a, b = p .. 't1', p .. 't2'
redis.call('SET', a, old)
redis.call('SET', b, ARGV[3])
redis.call('BITOP', 'OR', a, a, b)
redis.call('SET', b, ARGV[4])
redis.call('BITOP', 'NOT', b, b)
redis.call('BITOP', 'AND', a, a, b)
local held = redis.call('BITCOUNT', a)
local new = redis.call('GET', a) or ''
redis.call('DEL', a, b)
if held == 0 and #ARGV[3] > 0 then new = false end
return {'ok', tostring(held), hold(p, KEYS[1], rec, ARGV[2], i, old, new)}
"#,
    )
});

/// KEYS: m, x. ARGV: id. Drops one holding of a session that ended, or
/// withdrawn; idempotent. Returns the time the file became orphaned, or ''.
pub static DROP: LazyLock<Script> = LazyLock::new(|| {
    file_script(
        r#"
local rec = redis.call('HGET', KEYS[1], 'rec')
if not rec then return '' end
local p = prefix(KEYS[1])
rec = tonumber(rec)
local i, old = record(p, rec, ARGV[1])
if not i then return '' end
return hold(p, KEYS[1], rec, ARGV[1], i, old, false)
"#,
    )
});

/// KEYS: m, x. ARGV: how many records at most (0: all), a random number.
/// A file as Locate needs it: {name, digest, holders, first record's
/// index, records, count plane 0, plane 1, ...}, or {} if it is unknown.
/// The records are a window of that many, dense, from a random index
/// (wrapping), so every holder is as likely to be read.
pub static LOCATE: LazyLock<Script> = LazyLock::new(|| {
    file_script(
        r#"
local v = redis.call('HMGET', KEYS[1], 'name', 'digest', 'rec')
if not v[2] then return {} end
local p = prefix(KEYS[1])
local rec = tonumber(v[3])
local n = redis.call('HLEN', KEYS[2])
local want = tonumber(ARGV[1])
local first, recs = 0, ''
if n > 0 and (want == 0 or n <= want) then
  recs = redis.call('GETRANGE', p .. 'r', 0, n * rec - 1)
elseif n > 0 then
  first = tonumber(ARGV[2]) % n
  local last = first + want
  recs = redis.call('GETRANGE', p .. 'r', first * rec, math.min(last, n) * rec - 1)
  if last > n then
    recs = recs .. redis.call('GETRANGE', p .. 'r', 0, (last - n) * rec - 1)
  end
end
local out = {v[1], v[2], n, first, recs}
for j = 0, MAX_PLANES - 1 do
  local c = redis.call('GET', p .. 'c' .. j)
  if not c then break end
  out[#out + 1] = c
end
return out
"#,
    )
});

/// KEYS: the orphan index. ARGV: forget after (ms), how many at most.
/// File tags orphaned for that long, by their indexed time.
pub static ORPHANS_DUE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms() - tonumber(ARGV[1]), 'LIMIT', 0, ARGV[2])
"#,
    )
});

/// KEYS: m, x. ARGV: forget after (ms). Deletes the file if nobody has held
/// it for that long: {'gone', name, host charged, charge}; else {'held'} or
/// {'young', since}.
pub static FORGET: LazyLock<Script> = LazyLock::new(|| {
    file_script(
        r#"
if redis.call('HLEN', KEYS[2]) > 0 then return {'held'} end
local o = redis.call('HGET', KEYS[1], 'orphaned')
if not o then return {'held'} end
if tonumber(o) + tonumber(ARGV[1]) > now_ms() then return {'young', o} end
local v = redis.call('HMGET', KEYS[1], 'name', 'host', 'cost')
local p = prefix(KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2], p .. 'r')
for j = 0, MAX_PLANES - 1 do
  if redis.call('DEL', p .. 'c' .. j) == 0 then break end
end
return {'gone', v[1], v[2] or '', v[3] or '0'}
"#,
    )
});

/// KEYS: a host's charges. ARGV: names, bytes (both signed). Adds them;
/// the key goes when no name is left charged.
pub static CHARGE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local files = redis.call('HINCRBY', KEYS[1], 'files', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'bytes', ARGV[2])
if files <= 0 then redis.call('DEL', KEYS[1]) end
return files
"#,
    )
});

/// KEYS: k. ARGV: v. Deletes k if it still holds v.
pub static DELETE_IF: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});
