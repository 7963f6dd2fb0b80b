// Decoding of stored messages for display: the API gives the stored bytes
// base64-encoded; a SIP MESSAGE or an MSRP SEND is split into its start
// line, its headers and its body. Nothing here renders anything.

// bytes decodes base64 to a Uint8Array.
export function bytes(b64) {
  const bin = atob(b64 || '');
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) {
    out[i] = bin.charCodeAt(i);
  }
  return out;
}

// text decodes UTF-8, replacing what is not.
export function text(b) {
  return new TextDecoder('utf-8', { fatal: false }).decode(b);
}

// splitHead cuts a message at its first empty line: head lines (folded
// header lines joined) and the rest, or null when there is no empty line.
function splitHead(s) {
  let i = s.indexOf('\r\n\r\n');
  let sep = 4;
  if (i < 0) {
    i = s.indexOf('\n\n');
    sep = 2;
  }
  const head = i < 0 ? s : s.slice(0, i);
  const rest = i < 0 ? null : s.slice(i + sep);
  const lines = [];
  for (const line of head.split(/\r?\n/)) {
    if (/^[ \t]/.test(line) && lines.length > 1) {
      lines[lines.length - 1] += ' ' + line.trim();
    } else if (line !== '') {
      lines.push(line);
    }
  }
  return { lines, rest };
}

function header(line) {
  const i = line.indexOf(':');
  return i < 0 ? [line, ''] : [line.slice(0, i).trim(), line.slice(i + 1).trim()];
}

// parseSIP splits a SIP request (or an INVITE's start line and headers).
export function parseSIP(s) {
  const { lines, rest } = splitHead(s);
  return { start: lines[0] || '', headers: lines.slice(1).map(header), body: rest || '' };
}

// parseMSRP splits an MSRP SEND: start line, headers, body, end-line.
export function parseMSRP(s) {
  const first = s.split(/\r?\n/, 1)[0] || '';
  const tid = first.split(' ')[1] || '';
  const endLine = '-------' + tid;
  const end = tid ? s.lastIndexOf(endLine) : -1;
  const frame = end >= 0 ? s.slice(0, end) : s;
  const { lines, rest } = splitHead(frame);
  const body = rest === null ? '' : rest.replace(/\r?\n$/, '');
  return { start: first, headers: lines.slice(1).map(header), body, end: end >= 0 ? s.slice(end).trim() : '' };
}
