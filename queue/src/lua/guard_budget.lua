-- A GCRA budget (rate per second with a burst). Unlike admission, the caller decides what
-- "over" means: a refusal, or a lower priority. (gcra.lua is prepended.)
-- KEYS[1] STRING theoretical arrival time (ms)
-- ARGV[1] rate per second   ARGV[2] burst
-- Returns { 1, 0 } within budget (consumed); { 0, retry_after_ms } over it (nothing consumed).
local allowed, retry_ms, commit = gcra_check(KEYS[1], ARGV[1], ARGV[2])
if not allowed then
  return { 0, retry_ms }
end
commit()
return { 1, 0 }
