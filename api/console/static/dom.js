// DOM helpers. Everything the server returns is written with textContent
// or as attribute values, never parsed as HTML: a stored message holding
// markup shows as text.

// h builds an element: attrs are properties or attributes (class, hidden,
// disabled, data-*), children are nodes or strings (as text).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) {
      continue;
    }
    if (k === 'class') {
      el.className = v;
    } else if (k === 'onclick') {
      el.addEventListener('click', v);
    } else if (k === 'disabled' || k === 'hidden') {
      el[k] = Boolean(v);
    } else {
      el.setAttribute(k, String(v));
    }
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) {
      continue;
    }
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const $ = (id) => document.getElementById(id);

// setText replaces an element's content with text.
export function setText(el, text) {
  el.textContent = text === undefined || text === null ? '' : String(text);
}

// say shows a message in a message area; kind is '', 'error' or 'stale'.
// A stale message gets a button that runs reload.
export function say(el, text, kind = '', reload) {
  el.className = 'msg' + (kind ? ' ' + kind : '');
  el.replaceChildren(text);
  if (kind === 'stale' && reload) {
    el.append(h('button', { type: 'button', class: 'reload', onclick: reload }, 'Reload'));
  }
}

// confirmClick makes a dangerous button ask once more: the first click
// turns it into "Click again to confirm" for 5 s, the second runs action.
export function confirmClick(button, action) {
  let armed = null;
  const label = button.textContent;
  button.addEventListener('click', () => {
    if (armed) {
      clearTimeout(armed);
      armed = null;
      button.textContent = label;
      button.classList.remove('confirm');
      action();
      return;
    }
    button.textContent = 'Click again to confirm';
    button.classList.add('confirm');
    armed = setTimeout(() => {
      armed = null;
      button.textContent = label;
      button.classList.remove('confirm');
    }, 5000);
  });
}

export function fmtTime(s) {
  if (!s) {
    return '';
  }
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? String(s) : d.toLocaleString();
}
