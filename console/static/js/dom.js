// A small DOM builder. Text is always added as text nodes, never parsed as
// HTML, so what users write cannot become markup.

// h builds an element: h('button', {class: 'x', onclick: f}, 'Send').
// Props: class, dataset (an object), on<event> (a listener), anything else
// as an attribute (true: present, false/null/undefined: absent).
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  el.append(...children.flat(Infinity).filter((c) => c != null && c !== false));
  return el;
}

// reconcile makes parent's children exactly items, in order, moving as few
// nodes as it can (a node that stays in place keeps focus and selection).
export function reconcile(parent, items) {
  let i = 0;
  for (const item of items) {
    const at = parent.children[i];
    if (at !== item) parent.insertBefore(item, at ?? null);
    i++;
  }
  while (parent.children.length > items.length) parent.lastElementChild.remove();
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFormat = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

// shortTime is "10:30" today, "Jan 15" before.
export function shortTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return d.toDateString() === new Date().toDateString() ? timeFormat.format(d) : dayFormat.format(d);
}

// clockTime is "10:30".
export function clockTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : timeFormat.format(d);
}

// fullTime is the date and time, for a title.
export function fullTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : fullFormat.format(d);
}

// initials of a display name, for an avatar.
export function initials(name) {
  const parts = String(name).trim().split(/\s+/).filter(Boolean);
  const s = parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] ?? '?').slice(0, 2);
  return s.toUpperCase();
}
