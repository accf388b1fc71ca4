// smoothd's page helper, installed once per document (idempotent) in an isolated world of its
// own, so the page sees neither `window.__smoothd` nor the DOM calls it makes. It builds the
// compact page view the model reads and carries out element actions by index. The view is
// rebuilt only when something changed (a mutation counter, the URL, the scroll position and the
// viewport make the key). See docs/agent-protocol.md for the format.
(() => {
  if (window.__smoothd) return;
  const S = (window.__smoothd = { els: [], xels: [], base: 0, prev: new WeakSet(), mut: 0, key: '' });
  // Installed while the document was still being parsed (Chromium runs this file in every new
  // document): every mutation since is counted, so `mutAt` is the time of the last one. The
  // document it was installed in is remembered: should the window ever hold another document
  // (one that replaced it in the same window), that one is watched from the next call on, and
  // quiet is counted from the call again.
  const earlyDoc = document.readyState === 'loading' ? document : null;
  S.mutAt = performance.now();
  const changed = () => { S.mut++; S.mutAt = performance.now(); };
  const watch = (doc) => {
    if (!doc || doc.__smoothdWatched) return;
    doc.__smoothdWatched = true;
    if (doc !== earlyDoc) changed();
    try {
      new MutationObserver(changed).observe(doc, {
        subtree: true, childList: true, attributes: true, characterData: true,
      });
    } catch (e) {}
  };
  watch(document);
  // Whether the current document has been watched since before it was parsed.
  const early = () => { watch(document); return earlyDoc === document; };
  addEventListener('input', changed, true);
  addEventListener('change', changed, true);
  // Navigations this document started to another document (a link, a form, a script), told
  // as soon as they start, before the browser's events say so (see `brief`).
  S.leaving = 0;
  try {
    if (window.navigation) navigation.addEventListener('navigate', (e) => {
      if (!(e.destination && e.destination.sameDocument) && !e.downloadRequest) S.leaving++;
    });
  } catch (e) {}

  const SKIP = new Set(['SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE', 'HEAD', 'META', 'LINK', 'TITLE', 'BASE']);
  const BLOCK = new Set(['ADDRESS', 'ARTICLE', 'ASIDE', 'BLOCKQUOTE', 'BR', 'DD', 'DIALOG', 'DIV', 'DL', 'DT',
    'FIELDSET', 'FIGCAPTION', 'FIGURE', 'FOOTER', 'FORM', 'H1', 'H2', 'H3', 'H4', 'H5', 'H6', 'HEADER', 'HR',
    'LI', 'MAIN', 'NAV', 'OL', 'P', 'PRE', 'SECTION', 'TABLE', 'TR', 'UL', 'CAPTION', 'TBODY', 'THEAD',
    'TFOOT', 'LEGEND', 'DETAILS', 'OPTION']);
  const ROLES = new Set(['button', 'link', 'checkbox', 'radio', 'tab', 'menuitem', 'menuitemcheckbox',
    'menuitemradio', 'option', 'switch', 'combobox', 'textbox', 'searchbox', 'slider', 'spinbutton',
    'treeitem']);
  const clip = (s, n) => (s.length > n ? s.slice(0, n - 1) + '…' : s);
  const squash = (s) => s.replace(/\s+/g, ' ').trim();
  const quote = (v) => (/[\s>"=]/.test(v) || v === '' ? '"' + v.replace(/"/g, "'") + '"' : v);

  const interactive = (el) => {
    const t = el.tagName;
    if (t === 'A') return el.hasAttribute('href');
    if (t === 'BUTTON' || t === 'SELECT' || t === 'TEXTAREA' || t === 'SUMMARY') return true;
    if (t === 'INPUT') return el.type !== 'hidden';
    const role = el.getAttribute('role');
    if (role && ROLES.has(role)) return true;
    if (el.isContentEditable && !(el.parentElement && el.parentElement.isContentEditable)) return true;
    if (el.hasAttribute('onclick')) return true;
    const ti = el.getAttribute('tabindex');
    return ti !== null && +ti >= 0 && t !== 'BODY' && t !== 'HTML';
  };

  // The element's offset from the top document's viewport (same-origin frames add up).
  const frameOffset = (el) => {
    let x = 0, y = 0, win = el.ownerDocument.defaultView;
    while (win && win !== window && win.frameElement) {
      const f = win.frameElement, r = f.getBoundingClientRect();
      x += r.left + f.clientLeft; y += r.top + f.clientTop;
      win = f.ownerDocument.defaultView;
    }
    return { x, y };
  };

  // Not covered by another element at its centre or corners (modal overlays, banners).
  const reachable = (el, r, root) => {
    const pts = [[r.left + r.width / 2, r.top + r.height / 2], [r.left + 2, r.top + 2], [r.right - 2, r.bottom - 2]];
    for (const [x, y] of pts) {
      const vw = el.ownerDocument.defaultView;
      if (x < 0 || y < 0 || x >= vw.innerWidth || y >= vw.innerHeight) continue;
      let hit = (root.elementFromPoint ? root.elementFromPoint(x, y) : null);
      if (!hit) continue;
      if (hit === el || el.contains(hit) || hit.contains(el)) return true;
      // a label for the field, or a host of a shadow tree holding it
      if (hit.tagName === 'LABEL' && (hit.control === el || hit.contains(el))) return true;
      if (hit.shadowRoot && hit.shadowRoot.contains(el)) return true;
    }
    return false;
  };

  // A challenge a person must pass before the page goes on, or null: a captcha widget (by its
  // class or its frame's URL) that is visible and not yet answered (its response field is still
  // empty), or a "verify you are human" interstitial (a short page saying so). A page that only
  // talks about captchas, an invisible reCAPTCHA badge and a passed widget are not challenges.
  const WIDGETS = {
    recaptcha: { sel: '.g-recaptcha', field: 'g-recaptcha-response', name: 'reCAPTCHA' },
    hcaptcha: { sel: '.h-captcha', field: 'h-captcha-response', name: 'hCaptcha' },
    turnstile: { sel: '.cf-turnstile', field: 'cf-turnstile-response', name: 'Cloudflare Turnstile' },
  };
  const PHRASES = [/\b(verify|verifying|confirm|prove)( that)? (you are|you're) (a )?human\b/,
    /\bi('m| am) not a robot\b/, /\bare you a (robot|human)\b/,
    /\bchecking (your browser|if the site connection is secure)\b/, /\bcomplete the security check\b/];
  // Cloudflare's interstitial titles.
  const TITLES = [/^just a moment\b/, /^attention required\b/];
  const shown = (el) => {
    const r = el.getBoundingClientRect();
    if (r.width < 20 || r.height < 20) return false;
    return el.checkVisibility ? el.checkVisibility({ opacityProperty: true, visibilityProperty: true }) : true;
  };
  // Whether the widget around `el` has its answer: a response field with a value in `el` or in
  // one of its `up` nearest ancestors (a frame's field sits beside it, a widget's inside it).
  const answered = (el, field, up) => {
    if (el.getAttribute('data-hcaptcha-response')) return true;
    let box = el;
    for (let n = 0; box && n <= up; n++, box = box.parentElement) {
      for (const f of box.querySelectorAll('[name^="' + field + '"]')) if (f.value) return true;
    }
    return false;
  };
  const frameKind = (src) => {
    let u;
    try { u = new URL(src, location.href); } catch (e) { return null; }
    const h = u.hostname, on = (d) => h === d || h.endsWith('.' + d);
    if ((on('google.com') || on('recaptcha.net')) && u.pathname.startsWith('/recaptcha/')) {
      return /[?&]size=invisible/.test(u.search) ? null : 'recaptcha';
    }
    if (on('hcaptcha.com')) return /checkbox-invisible/.test(u.hash + u.search) ? null : 'hcaptcha';
    if (h === 'challenges.cloudflare.com') return 'turnstile';
    return null;
  };
  S.challenge = () => {
    if (!document.body) return null;
    // A page with a widget that is answered, hidden or invisible is past its challenge, whatever
    // its text says (a widget's own text may read "I'm not a robot").
    let widgets = 0;
    for (const [kind, w] of Object.entries(WIDGETS)) {
      for (const el of document.querySelectorAll(w.sel)) {
        widgets++;
        // An invisible reCAPTCHA bound to a button carries the class too: nothing to solve.
        if (/^(BUTTON|INPUT|A)$/.test(el.tagName) || el.getAttribute('data-size') === 'invisible') continue;
        if (shown(el) && !answered(el, w.field, 0)) return { kind, description: w.name + ' widget (' + w.sel + ')' };
      }
    }
    for (const f of document.getElementsByTagName('iframe')) {
      const kind = frameKind(f.getAttribute('src') || '');
      if (kind) widgets++;
      if (kind && shown(f) && !answered(f, WIDGETS[kind].field, 3)) {
        return { kind, description: WIDGETS[kind].name + ' frame from ' + new URL(f.src, location.href).hostname };
      }
    }
    // An interstitial has little on it: reading the text of a large page would cost too much.
    if (widgets || document.getElementsByTagName('*').length > 400) return null;
    const title = squash(document.title || '').toLowerCase();
    const text = squash(document.body.innerText || '').replace(/[\u2018\u2019]/g, "'");
    if (text.length > 600) return null;
    const lower = text.toLowerCase();
    let said = null;
    // A phrase in quotes is talked about, not asked.
    for (const re of PHRASES) {
      for (const m of lower.matchAll(new RegExp(re.source, 'g'))) {
        if (!/["'\u201c\u00ab(]/.test(lower[m.index - 1] || '')) { said = text.slice(m.index, m.index + m[0].length); break; }
      }
      if (said !== null) break;
    }
    const byTitle = TITLES.some((re) => re.test(title));
    if (said === null && !byTitle) return null;
    return { kind: 'interstitial', description: said !== null ? 'a page saying "' + said + '"' : 'a page titled "' + clip(squash(document.title), 40) + '"' };
  };

  S.view = (opts) => {
    watch(document);
    const key = [location.href, S.mut, scrollX, scrollY, innerWidth, innerHeight].join('|');
    if (opts.prevKey && opts.prevKey === key && (S.els.length || S.xels.length)) {
      // `young`: the document is younger than `opts.young` ms and its scripts made timers (see `late`).
      const young = !opts.nested && opts.young > 0 && performance.now() < opts.young && S.pageTimers() > 0;
      return { unchanged: true, key, young, challenge: opts.nested ? null : S.challenge() };
    }
    // Indices start at `base`: a cross-origin frame's view continues its page's numbering.
    const base = opts.base || 0;
    const els = [], xels = [], lines = [], seen = new WeakSet();
    let line = '', textChars = 0, more = 0, crossOrigin = 0, canvas = 0;
    const maxText = opts.maxText || 12000, maxEls = opts.maxElements || 250;
    const flush = () => { const t = squash(line); if (t && lines[lines.length - 1] !== t) lines.push(t); line = ''; };

    const describe = (el, idx, isNew) => {
      const t = el.tagName.toLowerCase();
      const a = [];
      const add = (k, v) => { if (v !== null && v !== undefined && v !== '') a.push(k + '=' + quote(clip(String(v), 60))); };
      if (el.id && el.id.length <= 40) add('id', el.id);
      add('name', el.getAttribute('name'));
      if (t === 'input' || t === 'button') { const ty = el.getAttribute('type'); if (ty && !(t === 'input' && ty === 'text')) add('type', ty); }
      add('role', el.getAttribute('role'));
      add('aria-label', el.getAttribute('aria-label'));
      add('placeholder', el.getAttribute('placeholder'));
      let text = '';
      if (t === 'input' || t === 'textarea') {
        const ty = (el.type || '').toLowerCase();
        if (ty === 'checkbox' || ty === 'radio') { if (el.checked) a.push('checked'); add('value', el.getAttribute('value')); }
        else if (ty === 'file') { if (el.files && el.files.length) add('value', Array.from(el.files).map(f => f.name).join(', ')); }
        else if (ty === 'password') { if (el.value) a.push('value=••••'); }
        else if (ty === 'submit' || ty === 'button' || ty === 'reset') text = el.value || '';
        else add('value', el.value);
      } else if (t === 'select') {
        const opts = Array.from(el.options);
        text = opts.filter(o => o.selected).map(o => squash(o.text)).join(', ');
        const names = opts.slice(0, 12).map(o => clip(squash(o.text), 30));
        text += ' (options: ' + names.join('|') + (opts.length > 12 ? '|… ' + (opts.length - 12) + ' more' : '') + ')';
      } else {
        text = squash(el.innerText || el.textContent || '');
        if (!text) { const img = el.querySelector && el.querySelector('img[alt]'); if (img) text = img.alt; }
        if (!text) text = el.getAttribute('title') || '';
      }
      if (el.disabled) a.push('disabled');
      if (el.required) a.push('required');
      if (el.getAttribute('aria-expanded')) add('expanded', el.getAttribute('aria-expanded'));
      return (isNew ? '*' : '') + '[' + (base + idx) + ']<' + t + (a.length ? ' ' + a.join(' ') : '') + '>' + clip(squash(text), 80);
    };

    const walk = (node, root, inInteractive) => {
      for (let n = node.firstChild; n; n = n.nextSibling) {
        if (n.nodeType === 3) {
          if (inInteractive) continue;
          const p = n.parentElement;
          if (!p) continue;
          const s = n.nodeValue;
          if (!s || !s.trim()) { line += ' '; continue; }
          const r = p.getBoundingClientRect();
          const vw = p.ownerDocument.defaultView;
          if (r.bottom < 0 || r.top > vw.innerHeight || r.right < 0 || r.left > vw.innerWidth || (r.width === 0 && r.height === 0)) continue;
          if (textChars > maxText) { more++; continue; }
          textChars += s.length;
          line += s;
          continue;
        }
        if (n.nodeType !== 1) continue;
        const el = n;
        if (SKIP.has(el.tagName)) continue;
        const block = BLOCK.has(el.tagName);
        if (block) flush();
        if (el.tagName === 'TD' || el.tagName === 'TH') line += ' | ';
        const st = el.ownerDocument.defaultView.getComputedStyle(el);
        const isInput = el.tagName === 'INPUT';
        // File inputs are often hidden behind a styled button: upload_file still works on them.
        if (isInput && el.type === 'file' && !inInteractive && (st.display === 'none' || st.visibility === 'hidden' || st.opacity === '0')) {
          if (els.length < maxEls) { flush(); lines.push(describe(el, els.length, !S.prev.has(el))); els.push(el); seen.add(el); }
          continue;
        }
        if (st.display === 'none') continue;
        // A checkbox or radio styled away (opacity 0) under its label is still the thing to click.
        const styledAway = isInput && (el.type === 'checkbox' || el.type === 'radio') && st.opacity === '0' && el.labels && el.labels.length > 0;
        const hidden = st.visibility === 'hidden' || (st.opacity === '0' && !styledAway);
        if (el.tagName === 'IFRAME' || el.tagName === 'FRAME') {
          flush();
          const r = el.getBoundingClientRect();
          if (hidden || r.width < 2 || r.height < 2) continue;
          let doc = null;
          try { doc = el.contentDocument; } catch (e) {}
          const label = el.id ? '#' + el.id : clip(el.getAttribute('src') || 'about:blank', 60);
          if (!doc || !doc.documentElement) {
            crossOrigin++;
            if (opts.nested) {
              let origin = label; try { origin = new URL(el.src, location.href).origin; } catch (e) {}
              lines.push('--- iframe ' + origin + ' (cross-origin, not readable) ---');
            } else {
              // The agent reads it through CDP and puts its view in place of this marker.
              lines.push('\u0001XFRAME ' + xels.length + '\u0001');
              xels.push(el);
            }
            continue;
          }
          watch(doc);
          lines.push('--- iframe ' + label + ' ---');
          if (doc.body) walk(doc.body, doc, false);
          flush();
          lines.push('--- end iframe ---');
          continue;
        }
        if (el.tagName === 'CANVAS') { const r = el.getBoundingClientRect(); if (r.width * r.height > innerWidth * innerHeight / 4) canvas++; }
        let isEl = false;
        if (!hidden && !inInteractive && interactive(el)) {
          const r = el.getBoundingClientRect();
          const vw = el.ownerDocument.defaultView;
          const inView = r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0 && r.top < vw.innerHeight && r.left < vw.innerWidth;
          if (inView && reachable(el, r, root)) {
            isEl = true;
            if (els.length < maxEls) {
              flush();
              lines.push(describe(el, els.length, !S.prev.has(el)));
              els.push(el);
              seen.add(el);
            } else more++;
          }
        }
        if (el.shadowRoot) walk(el.shadowRoot, el.shadowRoot, inInteractive || isEl);
        walk(el, root, inInteractive || isEl);
        if (block || isEl) flush();
      }
    };
    if (document.body) walk(document.body, document, false);
    flush();
    S.els = els;
    S.xels = xels;
    S.base = base;
    S.prev = seen;
    S.key = key;
    const se = document.scrollingElement || document.documentElement;
    const above = Math.round(se.scrollTop);
    const below = Math.max(0, Math.round(se.scrollHeight - se.clientHeight - se.scrollTop));
    return {
      unchanged: false, key, url: location.href, title: document.title, text: lines.join('\n'),
      elements: els.length, truncated: more, above, below, width: innerWidth, height: innerHeight,
      crossOrigin, canvas, challenge: opts.nested ? null : S.challenge(),
    };
  };

  const get = (i) => {
    const el = S.els[i - S.base];
    if (!el) return [null, 'there is no element [' + i + '] on this page view; use an index from the latest view'];
    if (!el.isConnected) return [null, 'element [' + i + '] is gone from the page (it changed); look at the new view'];
    // Every element action looks its element up here first: what the page had scheduled before
    // it, for `brief`.
    S.stamp = S.pageTimers();
    return [el, null];
  };

  // Where to click element i, in top-viewport coordinates, after scrolling it into view.
  S.point = (i) => {
    const [el, err] = get(i);
    if (err) return { error: err };
    // An invisible or tiny checkbox is clicked through its label.
    let target = el;
    const er = el.getBoundingClientRect();
    if (el.labels && el.labels.length && (er.width < 4 || er.height < 4 || el.ownerDocument.defaultView.getComputedStyle(el).opacity === '0')) target = el.labels[0];
    let r = target.getBoundingClientRect();
    const vw = el.ownerDocument.defaultView;
    if (r.top < 0 || r.left < 0 || r.bottom > vw.innerHeight || r.right > vw.innerWidth) {
      target.scrollIntoView({ block: 'center', inline: 'center', behavior: 'instant' });
      r = target.getBoundingClientRect();
    }
    if (r.width === 0 && r.height === 0) return { error: 'element [' + i + '] is not visible' };
    const o = frameOffset(el);
    S.mut++;
    // The page may have changed since the view (an overlay shown a moment after load): click
    // where the element itself is hit, or say what covers it rather than clicking that.
    const pts = [[0.5, 0.5], [0.2, 0.5], [0.8, 0.5], [0.5, 0.2], [0.5, 0.8], [0.1, 0.1], [0.9, 0.9]];
    let cover = null;
    for (const [fx, fy] of pts) {
      const x = r.left + r.width * fx, y = r.top + r.height * fy;
      const hit = hitAt(el, target, x, y, o);
      if (hit === null) return { x: o.x + x, y: o.y + y, tag: el.tagName.toLowerCase(), type: (el.type || '').toLowerCase() };
      if (!cover) cover = hit;
    }
    return { error: 'element [' + i + '] is covered by ' + name(cover) + ' (the page changed since the view); nothing was clicked: look at the new view and deal with what covers it first' };
  };

  // What is hit at (x, y) of el's own viewport instead of el (clicking `target`), or null when
  // el is; with `o`, el's frame offset, the top document is checked too (an overlay above a frame).
  const hitAt = (el, target, x, y, o) => {
    const vw = el.ownerDocument.defaultView;
    if (x < 0 || y < 0 || x >= vw.innerWidth || y >= vw.innerHeight) return null;
    const root = el.getRootNode();
    const hit = root.elementFromPoint ? root.elementFromPoint(x, y) : el.ownerDocument.elementFromPoint(x, y);
    const ours = (h) => !h || h === el || h === target || el.contains(h) || target.contains(h) || h.contains(target)
      || (h.tagName === 'LABEL' && (h.control === el || h.contains(el))) || (h.shadowRoot && h.shadowRoot.contains(el));
    if (!ours(hit)) return hit;
    if (vw !== window && vw.frameElement) {
      let top = document.elementFromPoint(o.x + x, o.y + y);
      while (top && top.shadowRoot && top.shadowRoot.elementFromPoint) {
        const inner = top.shadowRoot.elementFromPoint(o.x + x, o.y + y);
        if (!inner || inner === top) break;
        top = inner;
      }
      if (top && top.tagName !== 'IFRAME' && top.tagName !== 'FRAME' && !top.contains(vw.frameElement)) return top;
    }
    return null;
  };

  // What covers an element, in a few words for a message: the dialog it is or holds (an
  // overlay's backdrop), e.g. <div id=ad-overlay> with <div role=dialog aria-label=Advertisement> "…".
  const DIALOG = 'dialog,[role=dialog],[role=alertdialog],[aria-modal=true]';
  const tagOf = (el) => {
    const a = [el.tagName.toLowerCase()];
    if (el.id) a.push('id=' + quote(clip(el.id, 40)));
    for (const k of ['role', 'aria-label']) { const v = el.getAttribute(k); if (v) a.push(k + '=' + quote(clip(v, 40))); }
    if (!el.id && typeof el.className === 'string' && el.className.trim()) a.push('class=' + quote(clip(el.className.trim(), 40)));
    return '<' + a.join(' ') + '>';
  };
  const name = (el) => {
    const up = el.closest && el.closest(DIALOG);
    const down = !up && el.querySelector && el.querySelector(DIALOG);
    const box = up || el;
    const text = clip(squash(box.innerText || box.textContent || ''), 80);
    return tagOf(box) + (down ? ' with ' + tagOf(down) : '') + (text ? ' "' + text + '"' : '');
  };

  const setNative = (el, value) => {
    const proto = el.tagName === 'TEXTAREA' ? HTMLTextAreaElement.prototype : el.tagName === 'SELECT' ? HTMLSelectElement.prototype : HTMLInputElement.prototype;
    const desc = Object.getOwnPropertyDescriptor(proto, 'value');
    if (desc && desc.set) desc.set.call(el, value); else el.value = value;
    el.dispatchEvent(new Event('input', { bubbles: true, composed: true }));
    el.dispatchEvent(new Event('change', { bubbles: true }));
  };

  // Prepares element i for typing: focuses it and selects its content. Fields whose value cannot
  // be typed reliably (date, time, color, range…) are set directly: mode 'set'.
  S.focus = (i, text) => {
    const [el, err] = get(i);
    if (err) return { error: err };
    S.mut++;
    el.scrollIntoView({ block: 'center', inline: 'center', behavior: 'instant' });
    el.focus();
    const t = el.tagName, ty = (el.type || '').toLowerCase();
    if (t === 'INPUT' && ['date', 'time', 'datetime-local', 'month', 'week', 'color', 'range'].includes(ty)) {
      setNative(el, text);
      return { mode: 'set', value: el.value };
    }
    if (t === 'INPUT' && ['checkbox', 'radio', 'file', 'submit', 'button', 'image', 'reset'].includes(ty)) {
      return { error: 'element [' + i + '] is a ' + ty + ' input: use click' + (ty === 'file' ? ' or upload_file' : '') };
    }
    if (t === 'SELECT') return { error: 'element [' + i + '] is a select: use select_option' };
    if (t === 'INPUT' || t === 'TEXTAREA') {
      if (text === '') { setNative(el, ''); return { mode: 'set', value: '' }; }
      try { el.select(); } catch (e) {}
      return { mode: 'keys' };
    }
    if (el.isContentEditable) {
      const range = el.ownerDocument.createRange();
      range.selectNodeContents(el);
      const sel = el.ownerDocument.getSelection();
      sel.removeAllRanges(); sel.addRange(range);
      return { mode: 'keys' };
    }
    return { mode: 'keys' };
  };

  S.select = (i, want) => {
    const [el, err] = get(i);
    if (err) return { error: err };
    if (el.tagName !== 'SELECT') return { error: 'element [' + i + '] is a <' + el.tagName.toLowerCase() + '>, not a select; click it instead' };
    const opts = Array.from(el.options);
    const w = squash(String(want)).toLowerCase();
    const o = opts.find(o => squash(o.text).toLowerCase() === w) || opts.find(o => o.value.toLowerCase() === w)
      || opts.find(o => squash(o.text).toLowerCase().includes(w));
    if (!o) return { error: 'no option ' + JSON.stringify(String(want)) + ' in [' + i + ']; options: ' + opts.map(o => squash(o.text)).join(' | ') };
    S.mut++;
    el.focus();
    o.selected = true;
    el.dispatchEvent(new Event('input', { bubbles: true, composed: true }));
    el.dispatchEvent(new Event('change', { bubbles: true }));
    return { selected: squash(o.text) };
  };

  // Scrolls the page, or the largest scrollable box when the page itself does not scroll.
  S.scroll = (down, pages) => {
    const se = document.scrollingElement || document.documentElement;
    let target = se;
    if (se.scrollHeight <= se.clientHeight + 1) {
      let best = null, area = 0;
      for (const el of document.querySelectorAll('*')) {
        if (el.scrollHeight > el.clientHeight + 1) {
          const s = getComputedStyle(el).overflowY;
          if (s === 'auto' || s === 'scroll') { const a = el.clientWidth * el.clientHeight; if (a > area) { area = a; best = el; } }
        }
      }
      if (best) target = best;
    }
    const h = target === se ? innerHeight : target.clientHeight;
    const before = target.scrollTop;
    target.scrollBy({ top: (down ? 1 : -1) * pages * h * 0.9, behavior: 'instant' });
    const moved = Math.round(target.scrollTop - before);
    // A box's scroll is not in the view's key: the next view is rebuilt when anything moved.
    if (moved) S.mut++;
    return { moved };
  };

  // Cross-origin frame n of the last view: its element, and where its content box starts in the
  // top viewport (scrolled into view first, so clicks inside it land).
  S.xel = (n) => { const el = S.xels[n]; if (!el || !el.isConnected) throw new Error('the frame is gone'); return el; };
  S.xpos = (n) => {
    const el = S.xels[n];
    if (!el || !el.isConnected) return { error: 'the frame is gone from the page (it changed); look at the new view' };
    const vw = el.ownerDocument.defaultView;
    let r = el.getBoundingClientRect();
    if (r.top < 0 || r.left < 0 || r.bottom > vw.innerHeight || r.right > vw.innerWidth) {
      el.scrollIntoView({ block: 'nearest', inline: 'nearest', behavior: 'instant' });
      r = el.getBoundingClientRect();
    }
    const st = vw.getComputedStyle(el), o = frameOffset(el);
    return { x: o.x + r.left + el.clientLeft + parseFloat(st.paddingLeft || 0), y: o.y + r.top + el.clientTop + parseFloat(st.paddingTop || 0) };
  };

  // ---- Targets (driver/target.rs): how an element is described, and found again later. ----
  const norm = (s) => squash(String(s == null ? '' : s)).toLowerCase();
  const BUTTONISH = new Set(['submit', 'button', 'reset', 'image']);
  // A field holds a value (its text is data, not its identity).
  const isField = (el) => {
    const t = el.tagName;
    if (t === 'TEXTAREA' || t === 'SELECT') return true;
    if (t === 'INPUT') return !BUTTONISH.has((el.type || '').toLowerCase());
    return !!el.isContentEditable;
  };
  const roleOf = (el) => {
    const r = el.getAttribute('role');
    if (r && r.trim()) return r.trim().split(/\s+/)[0].toLowerCase();
    const t = el.tagName, ty = (el.type || '').toLowerCase();
    if (t === 'A') return el.hasAttribute('href') ? 'link' : null;
    if (t === 'BUTTON' || t === 'SUMMARY') return 'button';
    if (t === 'SELECT') return el.multiple || el.size > 1 ? 'listbox' : 'combobox';
    if (t === 'TEXTAREA') return 'textbox';
    if (t === 'INPUT') {
      const m = { checkbox: 'checkbox', radio: 'radio', submit: 'button', button: 'button', reset: 'button',
        image: 'button', search: 'searchbox', number: 'spinbutton', range: 'slider' };
      if (m[ty]) return m[ty];
      return ['', 'text', 'email', 'tel', 'url', 'password'].includes(ty) ? 'textbox' : null;
    }
    if (el.isContentEditable) return 'textbox';
    return null;
  };
  // A label's own words, without the control it wraps (a select's options are data).
  const labelText = (l) => {
    const c = l.cloneNode(true);
    for (const x of c.querySelectorAll('input, select, textarea, button')) x.remove();
    return squash(c.textContent || '');
  };
  const nameOf = (el) => {
    const doc = el.ownerDocument, t = el.tagName, ty = (el.type || '').toLowerCase();
    const lb = el.getAttribute('aria-labelledby');
    if (lb) {
      const s = squash(lb.split(/\s+/).map((id) => { const e = doc.getElementById(id); return e ? e.textContent : ''; }).join(' '));
      if (s) return clip(s, 80);
    }
    const al = squash(el.getAttribute('aria-label') || '');
    if (al) return clip(al, 80);
    if (t === 'INPUT' && (ty === 'submit' || ty === 'button' || ty === 'reset')) return clip(squash(el.value || (ty === 'submit' ? 'Submit' : '')), 80) || null;
    if (t === 'INPUT' && ty === 'image') return squash(el.alt || el.title || '') || null;
    if (isField(el)) {
      const s = el.labels ? squash(Array.from(el.labels).map(labelText).join(' ')) : '';
      if (s) return clip(s, 80);
      const o = squash(el.getAttribute('title') || el.getAttribute('placeholder') || '');
      return o ? clip(o, 80) : null;
    }
    let s = squash(el.innerText || el.textContent || '');
    if (!s) { const img = el.querySelector && el.querySelector('img[alt]'); if (img) s = squash(img.alt); }
    if (!s) s = squash(el.getAttribute('title') || '');
    return s ? clip(s, 80) : null;
  };
  const textOf = (el) => {
    if (isField(el)) return null;
    const s = squash(el.innerText || el.textContent || '');
    return s ? clip(s, 80) : null;
  };
  // Ids made by frameworks or counters change from run to run.
  const generated = (id) => id.length > 40 || /\d{3,}|:|^\d|^(ember|ext-gen|yui_|radix-|headlessui-|mui-|react-|rc-|__|uid|guid)/i.test(id)
    || (/\d/.test(id) && /[0-9a-f]{6,}/i.test(id));
  const attrsOf = (el) => {
    const a = {}, t = el.tagName, ty = (el.type || '').toLowerCase();
    const put = (k, v) => { if (v !== null && v !== undefined && squash(String(v)) !== '') a[k] = clip(squash(String(v)), 80); };
    if (el.id && !generated(el.id)) put('id', el.id);
    for (const k of ['name', 'placeholder', 'aria-label', 'data-testid', 'data-test', 'data-test-id', 'data-qa', 'data-cy']) put(k, el.getAttribute(k));
    if (t === 'INPUT' || t === 'BUTTON') put('type', (el.getAttribute('type') || (t === 'BUTTON' ? 'submit' : 'text')).toLowerCase());
    if (t === 'INPUT' && (ty === 'checkbox' || ty === 'radio')) put('value', el.getAttribute('value'));
    if (t === 'A' && el.hasAttribute('href')) {
      try {
        const u = new URL(el.getAttribute('href'), el.baseURI);
        put('href', u.protocol === 'http:' || u.protocol === 'https:' ? (u.origin === el.ownerDocument.location.origin ? '' : u.origin) + u.pathname : u.protocol);
      } catch (e) {}
    }
    if (t === 'SELECT') put('options', Array.from(el.options).slice(0, 30).map((o) => o.value).join('|'));
    return a;
  };
  const frameOf = (el) => {
    const w = el.ownerDocument.defaultView;
    return !w || w === w.top ? null : String(w.location.href).split(/[?#]/)[0];
  };
  const info = (el) => ({ tag: el.tagName.toLowerCase(), role: roleOf(el), name: nameOf(el), text: textOf(el), attrs: attrsOf(el), frame: frameOf(el) });
  const sig = (x) => [x.tag, x.role || '', norm(x.name), norm(x.text), x.frame || ''].join('\u0001');

  // Every element a person could use in `doc` and its same-origin frames, in document order, on
  // screen or not: the view's choice without the viewport and the overlay test.
  const usable = (doc) => {
    const out = [];
    const walk = (node, inInteractive) => {
      for (let el = node.firstElementChild; el; el = el.nextElementSibling) {
        if (SKIP.has(el.tagName)) continue;
        const st = el.ownerDocument.defaultView.getComputedStyle(el);
        const isInput = el.tagName === 'INPUT';
        if (isInput && el.type === 'file' && !inInteractive && (st.display === 'none' || st.visibility === 'hidden' || st.opacity === '0')) { out.push(el); continue; }
        if (st.display === 'none') continue;
        const styledAway = isInput && (el.type === 'checkbox' || el.type === 'radio') && st.opacity === '0' && el.labels && el.labels.length > 0;
        const hidden = st.visibility === 'hidden' || (st.opacity === '0' && !styledAway);
        if (el.tagName === 'IFRAME' || el.tagName === 'FRAME') {
          if (hidden) continue;
          let d = null;
          try { d = el.contentDocument; } catch (e) {}
          if (d && d.body) walk(d.body, false);
          continue;
        }
        let isEl = false;
        if (!hidden && !inInteractive && interactive(el)) {
          const r = el.getBoundingClientRect();
          if (r.width > 0 && r.height > 0) { isEl = true; out.push(el); }
        }
        if (el.shadowRoot) walk(el.shadowRoot, inInteractive || isEl);
        walk(el, inInteractive || isEl);
      }
    };
    if (doc.body) walk(doc.body, false);
    return out;
  };

  // Element i of the last view, described (its position among the elements that look the same).
  S.target = (i) => {
    const [el, err] = get(i);
    if (err) return { error: err };
    const me = info(el), key = sig(me);
    let nth = 0;
    for (const c of usable(document)) {
      if (c === el) break;
      if (c.tagName === el.tagName && sig(info(c)) === key) nth++;
    }
    return Object.assign(me, { nth });
  };

  // How well candidate c (described) fits target t; null when it is not the same thing. A field
  // is known by its label or one identifying attribute; anything else by its name and text.
  const fit = (c, t, field) => {
    if (t.role && c.role && t.role !== c.role) return null;
    const ta = t.attrs || {}, ca = c.attrs;
    if (ta.type && ca.type && ta.type !== ca.type) return null;
    let s = 0, agree = 0;
    for (const k of Object.keys(ta)) {
      if (k === 'type') continue;
      if (ca[k] === undefined) s -= 1;
      else if (ca[k] === ta[k]) { s += 1; agree++; } else s -= 2;
    }
    if (field) {
      const label = !!t.name && norm(c.name) === norm(t.name);
      const ident = ['name', 'id', 'placeholder', 'aria-label'].some((k) => ta[k] !== undefined && ca[k] === ta[k]);
      if (!label && !ident) return null;
      if (label) s += 2;
      return s >= 0 ? s : null;
    }
    if (norm(c.name) !== norm(t.name) || norm(c.text) !== norm(t.text)) return null;
    if (!t.name && !t.text && !agree) return null;
    return s;
  };

  // The index in the last view of the element target t describes. Never a guess: nothing, or a
  // tie that the position among look-alikes cannot break, is not found. One found out of view
  // is scrolled to when `scroll` (the caller then observes and asks again). With `quick` the
  // last view may be older than the page: its index is given only for an element still on
  // screen and not covered (what a new view would show), else `stale` asks for a new view;
  // with `adopt` too (the caller has no view of this page), such an element that the last view
  // did not number is numbered after its elements.
  S.find = (t, scroll, quick, adopt) => {
    const tf = t.frame || null;
    const cands = usable(document).filter((c) => c.tagName.toLowerCase() === t.tag && frameOf(c) === tf);
    const infos = cands.map(info);
    let best = null, top = [];
    infos.forEach((c, k) => {
      const s = fit(c, t, isField(cands[k]));
      if (s === null) return;
      if (best === null || s > best) { best = s; top = [k]; } else if (s === best) top.push(k);
    });
    if (!top.length) return { found: false, why: 'nothing like it' };
    let pick = null;
    if (top.length === 1) pick = top[0];
    else {
      const key = sig(t);
      const same = [];
      infos.forEach((c, k) => { if (sig(c) === key) same.push(k); });
      const k = same[t.nth || 0];
      if (k !== undefined && top.includes(k)) pick = k;
    }
    if (pick === null) return { found: false, why: 'ambiguous' };
    const el = cands[pick];
    const idx = S.els.indexOf(el);
    if (quick) {
      const r = el.getBoundingClientRect(), vw = el.ownerDocument.defaultView;
      const now = r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0 && r.top < vw.innerHeight
        && r.left < vw.innerWidth && reachable(el, r, el.getRootNode());
      if (now && idx >= 0) return { found: true, index: S.base + idx };
      if (now && adopt) { S.els.push(el); return { found: true, index: S.base + S.els.length - 1 }; }
      return { found: false, stale: true };
    }
    if (idx >= 0) return { found: true, index: S.base + idx };
    if (!scroll) return { found: false, why: 'not in view' };
    S.mut++;
    el.scrollIntoView({ block: 'center', inline: 'center', behavior: 'instant' });
    return { found: false, scrolled: true };
  };

  // What the page looks like, without its data: headings, fields, buttons and links a person
  // sees now (not covered), digits as '#', rows of lists and tables left out (they are data).
  S.shape = () => {
    const inView = (el) => {
      const r = el.getBoundingClientRect(), vw = el.ownerDocument.defaultView;
      return r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0 && r.top < vw.innerHeight && r.left < vw.innerWidth
        && reachable(el, r, el.getRootNode());
    };
    const repeated = (el) => {
      for (let e = el, d = 0; e && e.parentElement && d < 6; e = e.parentElement, d++) {
        const row = e.tagName === 'LI' || e.tagName === 'TR' || e.tagName === 'ARTICLE' || (typeof e.className === 'string' && e.className.trim());
        if (!row) continue;
        let same = 0;
        for (const s of e.parentElement.children) if (s.tagName === e.tagName && s.className === e.className) same++;
        if (same >= 3) return true;
      }
      return false;
    };
    const kinds = { h: [], f: [], b: [], l: [] }, seen = new Set();
    const add = (kind, s) => {
      const m = kind + ':' + clip(norm(s).replace(/\d+([.,]\d+)*/g, '#'), 60);
      if (m.length > 2 && !seen.has(m)) { seen.add(m); kinds[kind].push(m); }
    };
    for (const h of document.querySelectorAll('h1, h2, h3, h4, h5, h6, [role=heading]')) {
      if (inView(h) && !repeated(h)) add('h', h.innerText || h.textContent || '');
    }
    for (const el of usable(document)) {
      if (!inView(el)) continue;
      const role = roleOf(el);
      if (isField(el)) add('f', nameOf(el) || el.getAttribute('name') || el.getAttribute('placeholder') || '');
      else if (role === 'link') { if (!repeated(el)) add('l', nameOf(el) || ''); }
      else add('b', nameOf(el) || '');
    }
    const marks = kinds.h.concat(kinds.f, kinds.b, kinds.l).slice(0, 40);
    return { url: String(location.href).split(/[?#]/)[0], title: document.title, marks };
  };

  S.element = (i) => { const [el, err] = get(i); if (err) throw new Error(err); return el; };

  // Timers the page's own scripts have made in this document. A window's timer ids are shared
  // by all its worlds and handed out in sequence, so our next id, less the timers we made, tells
  // without touching the page's functions.
  let own = 0;
  const later = (f, ms) => { own++; return setTimeout(f, ms); };
  S.pageTimers = () => later(() => {}, 0) - own;

  // Whether the body shows anything yet: text, or a control, image or frame with a size.
  const content = () => {
    const b = document.body;
    if (!b) return false;
    if (squash(b.innerText || '')) return true;
    for (const el of b.querySelectorAll('input:not([type=hidden]),button,select,textarea,img,svg,canvas,video,iframe,embed,object')) {
      const r = el.getBoundingClientRect();
      if (r.width > 0 && r.height > 0) return true;
    }
    return false;
  };

  // After DOMContentLoaded: resolves when the DOM has been quiet for `quiet` ms with content in
  // the body, or after `max` ms; says whether there is content and whether the page has made
  // timers (an empty body that set timers may still be rendered by them).
  // A helper installed early knows when the DOM last changed; one installed late counts quiet
  // from the call.
  S.ready = (quiet, max) => new Promise((res) => {
    const start = performance.now();
    const known = early();
    let last = S.mut, lastChange = known ? S.mutAt : start;
    const tick = () => {
      const now = performance.now();
      if (S.mut !== last) { last = S.mut; lastChange = known ? S.mutAt : now; }
      const done = now - start >= max;
      if (now - lastChange >= quiet || done) {
        const has = content();
        if (has || done) return res({ content: has, timers: S.pageTimers() > 0, ms: Math.round(now - start) });
      }
      later(tick, 10);
    };
    tick();
  });

  // Resolves at the DOM's next change, or once the document is `age` ms old (its time origin is
  // its navigation's start).
  S.late = (age) => new Promise((res) => {
    watch(document);
    const last = S.mut;
    const tick = () => {
      if (S.mut !== last || performance.now() >= age) return res(Math.round(performance.now()));
      later(tick, 10);
    };
    tick();
  });

  // Whether the page went idle after the element action that stamped it (see `get`): a frame
  // and a task later, the DOM has not changed and the page's scripts have set no timer since
  // before the action. By then the action's event handlers, their promises, the frame's
  // callbacks and the messages they posted have run; a page that scheduled nothing more has
  // nothing more to draw. False when no action stamped, or no frame came within `max` ms.
  const idle = (max) => new Promise((res) => {
    watch(document);
    const stamp = S.stamp;
    S.stamp = null;
    if (typeof stamp !== 'number') return res(false);
    const m = S.mut;
    let over = false;
    const cap = later(() => { over = true; res(false); }, max);
    requestAnimationFrame(() => later(() => {
      if (over) return;
      clearTimeout(cap);
      res(S.mut === m && S.pageTimers() === stamp);
    }, 0));
  });

  // Idle as above, else `settle`; then whether this document started leaving since the last
  // call.
  S.brief = (quiet, max) => {
    const start = performance.now();
    return idle(Math.min(50, max))
      .then((calm) => (calm ? 0 : S.settle(quiet, Math.max(0, max - (performance.now() - start)))))
      .then(() => {
        const leaving = S.leaving > 0;
        S.leaving = 0;
        return { ms: Math.round(performance.now() - start), leaving };
      });
  };

  // Resolves when the DOM has been quiet for `quiet` ms, or after `max` ms.
  S.settle = (quiet, max) => new Promise((res) => {
    watch(document);
    const start = performance.now();
    let last = S.mut, lastChange = start;
    const tick = () => {
      const now = performance.now();
      if (S.mut !== last) { last = S.mut; lastChange = now; }
      if (now - lastChange >= quiet || now - start >= max) return res(Math.round(now - start));
      later(tick, 10);
    };
    later(tick, 10);
  });
})();
