//! The Lua scripts that keep the store's contract inside Redis: each runs atomically on the
//! node that owns its keys, so no client ever reads before it writes.

use quiver_online::row::{FORMAT_VERSION, HEADER, VERSION_FIELDS};

/// Writes rows newest-wins. `KEYS`: row keys (one slot); `ARGV`: for each key its encoded
/// row, then the time (ms since the epoch) at which the row expires, or `0` for never.
/// Returns how many rows replaced what was stored.
pub(crate) fn write_newest() -> redis::Script {
    let fields = VERSION_FIELDS
        .iter()
        .map(|(at, signed)| format!("{{{}, {signed}}}", at + 1))
        .collect::<Vec<_>>()
        .join(", ");
    redis::Script::new(&format!(
        r"
-- Whether row `new` is at least as new as row `old`: (event, created, sequence), each 8 bytes
-- little-endian, compared from the most significant byte; event and created are signed.
local FIELDS = {{{fields}}}
local function at_least_as_new(new, old)
  if string.len(old) < {HEADER} or string.byte(old, 1) ~= {FORMAT_VERSION} then
    return true
  end
  for _, f in ipairs(FIELDS) do
    local first, signed = f[1], f[2]
    for i = first + 7, first, -1 do
      local a, b = string.byte(new, i), string.byte(old, i)
      if signed and i == first + 7 then
        if a >= 128 then a = a - 256 end
        if b >= 128 then b = b - 256 end
      end
      if a ~= b then
        return a > b
      end
    end
  end
  return true
end

local written = 0
for i, key in ipairs(KEYS) do
  local row, expires = ARGV[2 * i - 1], ARGV[2 * i]
  local old = redis.call('GET', key)
  if not old or at_least_as_new(row, old) then
    if expires == '0' then
      redis.call('SET', key, row)
    else
      redis.call('SET', key, row, 'PXAT', expires)
    end
    written = written + 1
  end
end
return written
"
    ))
}

/// Takes or extends a lease. `KEYS[1]`: the lease; `ARGV`: holder, ttl in ms. Returns 1 when
/// `holder` has the lease afterwards.
pub(crate) fn acquire_lease() -> redis::Script {
    redis::Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
",
    )
}

/// Gives up a lease. `KEYS[1]`: the lease; `ARGV[1]`: holder.
pub(crate) fn release_lease() -> redis::Script {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
",
    )
}

/// Records a run and keeps the newest of its view. `KEYS`: the view's runs hash, the
/// project's run-views set; `ARGV`: run field, JSON, view, runs kept.
pub(crate) fn record_run() -> redis::Script {
    redis::Script::new(
        r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local kept = tonumber(ARGV[4])
local n = redis.call('HLEN', KEYS[1])
if n > kept then
  local fields = redis.call('HKEYS', KEYS[1])
  table.sort(fields)
  for i = 1, n - kept do
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
return n
",
    )
}
