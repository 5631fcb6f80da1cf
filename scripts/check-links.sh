#!/usr/bin/env bash
# Checks that every relative link in README.md and docs/*.md resolves: the
# file (or directory) exists, relative to the linking file, and a `#anchor`
# names a heading of the target (or of the same file for a bare `#anchor`),
# by GitHub's slugs (lowercase, punctuation but `-` and `_` dropped, spaces
# to hyphens, `-1`, `-2`… for repeated headings). Covers `[text](target)`,
# `![alt](target)`, reference definitions `[ref]: target` and HTML
# `<img src>` / `<a href>`; skips http(s), mailto and other schemes, and
# anything inside fenced code blocks or code spans.
# Prints each broken link as `file:line: target` and exits 1; else a summary.
set -euo pipefail
cd "$(dirname "$0")/.."

exec python3 - README.md docs <<'PY'
import os, re, sys
from urllib.parse import unquote

FENCE = re.compile(r'^ {0,3}(`{3,}|~{3,})')
ATX = re.compile(r'^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$')
SETEXT = re.compile(r'^ {0,3}(=+|-+)[ \t]*$')
CODE_SPAN = re.compile(r'(`+)(.+?)\1')
# [text](target "title"): text may hold one level of brackets ([`x`], ![img](y))
INLINE = re.compile(r'\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:\s+(?:"[^"]*"|\'[^\']*\'|\([^)]*\)))?\s*\)')
REFDEF = re.compile(r'^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)')
HTML = re.compile(r'<(?:img|a|source)\b[^>]*?\s(?:src|href)\s*=\s*["\']([^"\']*)["\']', re.I)
HTML_ID = re.compile(r'<[a-z][^>]*?\s(?:id|name)\s*=\s*["\']([^"\']+)["\']', re.I)
SCHEME = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*:')


def outside_fences(lines):
    """Yields (line number, text) of the lines outside fenced code blocks."""
    fence = None
    for no, line in enumerate(lines, 1):
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)
                continue
            yield no, line
        elif re.match(r'^ {0,3}' + re.escape(fence[0]) + '{%d,}[ \t]*$' % len(fence), line):
            fence = None


def heading_text(raw):
    """The text GitHub renders for a heading's markdown."""
    t = CODE_SPAN.sub(lambda m: m.group(2).strip(), raw)
    t = re.sub(r'!\[([^\]]*)\]\([^)]*\)', r'\1', t)
    t = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', t)
    t = re.sub(r'<[^>]+>', '', t)
    return t


def slug(text):
    s = heading_text(text).strip().lower()
    s = re.sub(r'[^\w\- ]', '', s)
    return s.replace(' ', '-')


_anchors = {}


def anchors(path):
    if path not in _anchors:
        with open(path, encoding='utf-8') as f:
            lines = f.read().split('\n')
        found, seen, prev = set(), {}, None
        for no, line in outside_fences(lines):
            text = None
            m = ATX.match(line)
            if m:
                text = m.group(2) or ''
            elif prev is not None and prev.strip() and SETEXT.match(line) \
                    and not ATX.match(prev) and not prev.lstrip().startswith(('|', '-', '*', '>')):
                text = prev.strip()
            if text is not None:
                base = slug(text)
                n = seen.get(base, 0)
                seen[base] = n + 1
                found.add(base if n == 0 else f'{base}-{n}')
            for m in HTML_ID.finditer(line):
                found.add(m.group(1))
            prev = line
        _anchors[path] = found
    return _anchors[path]


def links(line):
    bare = CODE_SPAN.sub(lambda m: 'code', line)
    for m in INLINE.finditer(bare):
        yield m.group(2)
    m = REFDEF.match(bare)
    if m:
        yield m.group(1)
    for m in HTML.finditer(bare):
        yield m.group(1)


files = []
for arg in sys.argv[1:]:
    if os.path.isdir(arg):
        for root, _, names in os.walk(arg):
            files += [os.path.join(root, n) for n in sorted(names) if n.endswith('.md')]
    else:
        files.append(arg)

broken, checked = [], 0
for path in files:
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    for no, line in outside_fences(lines):
        for target in links(line):
            target = target.strip('<>').strip()
            if not target or SCHEME.match(target) or target.startswith('//'):
                continue
            checked += 1
            file_part, _, anchor = target.partition('#')
            file_part = unquote(file_part)
            if not file_part:
                dest = path
            elif file_part.startswith('/'):
                dest = os.path.normpath(file_part.lstrip('/'))
            else:
                dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part))
            if not os.path.exists(dest):
                broken.append(f'{path}:{no}: {target}')
                continue
            if anchor and dest.endswith('.md') and os.path.isfile(dest):
                if unquote(anchor) not in anchors(dest):
                    broken.append(f'{path}:{no}: {target}')

for b in broken:
    print(b)
if broken:
    print(f'check-links: {len(broken)} of {checked} relative links in {len(files)} files do not resolve', file=sys.stderr)
    sys.exit(1)
print(f'check-links: all {checked} relative links in {len(files)} files resolve')
PY
