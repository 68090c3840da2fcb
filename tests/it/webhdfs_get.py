"""Independent reader for the HDFS tests: copies every .parquet file under PATH on HDFS
(through WebHDFS: LISTSTATUS, then OPEN, which redirects to the DataNode) into DEST, keeping
the layout, skipping the writers' .incomplete directory. Standard library only.

Usage: webhdfs_get.py http://namenode:port /hdfs/path DEST
"""
import json
import os
import sys
import urllib.parse
import urllib.request

base, root, dest = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]


def call(path, op):
    url = f"{base}/webhdfs/v1{urllib.parse.quote(path)}?op={op}&user.name=reader"
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def walk(path):
    for st in json.loads(call(path, "LISTSTATUS"))["FileStatuses"]["FileStatus"]:
        child = f"{path}/{st['pathSuffix']}"
        if st["type"] == "DIRECTORY":
            if st["pathSuffix"] != ".incomplete":
                yield from walk(child)
        elif child.endswith(".parquet"):
            yield child


n = 0
for f in walk(root):
    out = os.path.join(dest, os.path.relpath(f, root))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "wb") as w:
        w.write(call(f, "OPEN"))
    n += 1
print(n)
