// Installed before any page script: counts the page's pending short timers (50 ms to 1 s), so
// that after a navigation the agent can wait for pop-ups and banners a page shows "a moment after
// load" instead of observing too early. The wrappers keep the native functions' names and text.
(() => {
  if (window.__smoothdPending !== undefined) return;
  window.__smoothdPending = 0;
  const st = window.setTimeout, ct = window.clearTimeout, live = new Set();
  const wrapped = function setTimeout(fn, delay, ...args) {
    const d = +delay || 0;
    if (typeof fn !== 'function' || d < 50 || d > 1000) return st.call(this, fn, delay, ...args);
    let id;
    id = st.call(this, function () {
      if (live.delete(id)) window.__smoothdPending--;
      return fn.apply(this, arguments);
    }, delay, ...args);
    live.add(id);
    window.__smoothdPending++;
    return id;
  };
  const cleared = function clearTimeout(id) {
    if (live.delete(id)) window.__smoothdPending--;
    return ct.call(this, id);
  };
  const native = (name) => () => 'function ' + name + '() { [native code] }';
  Object.defineProperty(wrapped, 'toString', { value: native('setTimeout') });
  Object.defineProperty(cleared, 'toString', { value: native('clearTimeout') });
  window.setTimeout = wrapped;
  window.clearTimeout = cleared;
})();
