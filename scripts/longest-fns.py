#!/usr/bin/env python3
"""The longest functions of the non-test Rust code: `scripts/longest-fns.py [N]`.

Counts lines from `fn` to its closing brace (strings, chars and comments
stripped before counting braces); skips tests/, benches/, fuzz/ and #[test]
functions. A measuring aid for reviews, not a check.
"""
import re,sys,subprocess
files=subprocess.check_output(['git','ls-files','*.rs'],text=True).split()
res=[]
def strip(l):
    l=re.sub(r"b?'(\\.|[^'\\])'", "''", l)
    l=re.sub(r'"(\\.|[^"\\])*"', '""', l)
    l=re.sub(r'//.*','',l)
    return l
for f in files:
    if '/tests/' in f or f.startswith('benches') or 'fuzz' in f: continue
    lines=[strip(x) for x in open(f).read().split('\n')]
    # skip cfg(test) modules
    for i,l in enumerate(lines):
        m=re.match(r'\s*(pub(\([^)]*\))?\s+)?(async\s+)?fn\s+(\w+)',l)
        if not m: continue
        if any('#[test]' in lines[k] or 'tokio::test' in lines[k] for k in range(max(0,i-3),i)): continue
        depth=0;started=False;j=i
        while j<len(lines):
            if not started and ';' in lines[j] and '{' not in lines[j]: break
            depth+=lines[j].count('{')-lines[j].count('}')
            if '{' in lines[j]: started=True
            if started and depth<=0: break
            j+=1
        if started: res.append((j-i+1,f,m.group(4),i+1))
res.sort(reverse=True)
for r in res[:int(sys.argv[1]) if len(sys.argv)>1 else 15]: print(*r)
