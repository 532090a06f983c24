//! The Lua scripts: each runs atomically on one hash slot (its declared
//! keys, and keys it names from a prefix of that same slot). Bits are
//! changed byte by byte in one pass, never bit by bit.

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

fn script(body: &str) -> Script {
    Script::new(&format!("{}{}", prelude!(), body))
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

/// KEYS: s, l, d. ARGV: id, addr, token hash, ttl ms. A new session.
pub static OPEN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
redis.call('HSET', KEYS[1], 'addr', ARGV[2], 'token', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[3], now_ms() + tonumber(ARGV[4]), ARGV[1])
return 'ok'
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

/// KEYS: m, h. ARGV: name, manifest, digest, layout, id, bitmap, '1' to
/// drop the holding, the host charged for a new file, its charge (bytes).
/// Creates the file if new, refuses other content, then sets or drops the
/// holding. Returns {'ok', created, orphaned since ('' if held)},
/// {'conflict', digest, layout} or {'collision'}.
pub static PUT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = now_ms()
local created = '0'
local v = redis.call('HMGET', KEYS[1], 'name', 'digest', 'layout')
if not v[2] then
  redis.call('HSET', KEYS[1], 'name', ARGV[1], 'manifest', ARGV[2], 'digest', ARGV[3],
    'layout', ARGV[4], 'orphaned', now, 'host', ARGV[8], 'cost', ARGV[9])
  created = '1'
elseif v[1] ~= ARGV[1] then
  return {'collision'}
elseif v[2] ~= ARGV[3] or v[3] ~= ARGV[4] then
  return {'conflict', v[2], v[3]}
end
if ARGV[7] == '1' then
  redis.call('HDEL', KEYS[2], ARGV[5])
  if redis.call('HLEN', KEYS[2]) == 0 then
    local o = redis.call('HGET', KEYS[1], 'orphaned')
    if not o then o = tostring(now); redis.call('HSET', KEYS[1], 'orphaned', o) end
    return {'ok', created, o}
  end
  return {'ok', created, ''}
end
redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
redis.call('HDEL', KEYS[1], 'orphaned')
return {'ok', created, ''}
"#,
    )
});

/// KEYS: m, h. ARGV: digest the chunks were checked against, id, add
/// bitmap, remove bitmap (both the file's length). new = (old | add) &
/// ~remove; no chunk of a file with chunks drops the holding. Returns
/// {'ok', chunks held, orphaned since or ''}, {'unknown'} or {'stale'}.
/// The bits are combined and counted by BITOP and BITCOUNT on two scratch
/// keys of the file's slot, deleted before the script ends (so never seen
/// by anyone): a loop over the bytes in Lua cost 40 µs of Redis time per
/// call for a 1,024-chunk file, these commands a few.
pub static CHUNKS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local d = redis.call('HGET', KEYS[1], 'digest')
if not d then return {'unknown'} end
if d ~= ARGV[1] then return {'stale'} end
local p = string.sub(KEYS[2], 1, #KEYS[2] - 1)
local x, y = p .. 'x', p .. 'y'
redis.call('SET', x, redis.call('HGET', KEYS[2], ARGV[2]) or '')
redis.call('SET', y, ARGV[3])
redis.call('BITOP', 'OR', x, x, y)
redis.call('SET', y, ARGV[4])
redis.call('BITOP', 'NOT', y, y)
redis.call('BITOP', 'AND', x, x, y)
local held = redis.call('BITCOUNT', x)
local new = redis.call('GET', x) or ''
redis.call('DEL', x, y)
if held == 0 and #ARGV[3] > 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  if redis.call('HLEN', KEYS[2]) == 0 then
    local o = redis.call('HGET', KEYS[1], 'orphaned')
    if not o then o = tostring(now_ms()); redis.call('HSET', KEYS[1], 'orphaned', o) end
    return {'ok', '0', o}
  end
  return {'ok', '0', ''}
end
redis.call('HSET', KEYS[2], ARGV[2], new)
redis.call('HDEL', KEYS[1], 'orphaned')
return {'ok', tostring(held), ''}
"#,
    )
});

/// KEYS: m, h. ARGV: id. Drops one holding of a session that ended;
/// idempotent. Returns the time the file became orphaned, or ''.
pub static DROP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return '' end
if redis.call('HLEN', KEYS[2]) > 0 or redis.call('EXISTS', KEYS[1]) == 0 then return '' end
local o = redis.call('HGET', KEYS[1], 'orphaned')
if not o then o = tostring(now_ms()); redis.call('HSET', KEYS[1], 'orphaned', o) end
return o
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

/// KEYS: m, h. ARGV: forget after (ms). Deletes the file if nobody has held
/// it for that long: {'gone', name, host charged, charge}; else {'held'} or
/// {'young', since}.
pub static FORGET: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('HLEN', KEYS[2]) > 0 then return {'held'} end
local o = redis.call('HGET', KEYS[1], 'orphaned')
if not o then return {'held'} end
if tonumber(o) + tonumber(ARGV[1]) > now_ms() then return {'young', o} end
local v = redis.call('HMGET', KEYS[1], 'name', 'host', 'cost')
redis.call('DEL', KEYS[1], KEYS[2])
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
