"""Independent reader for the archive tests: pyarrow reads every .parquet file under a root
and prints, as JSON, what a person would check: path, compression, schema types, rows."""
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

root = sys.argv[1]
files = []
for dirpath, _, names in os.walk(root):
    for name in sorted(names):
        if not name.endswith(".parquet"):
            continue
        path = os.path.join(dirpath, name)
        pf = pq.ParquetFile(path)
        table = pf.read()
        rows = table.to_pylist()
        ts_us = table.column("timestamp").cast(pa.int64()).to_pylist()
        files.append({
            "path": os.path.relpath(path, root),
            "compression": sorted({pf.metadata.row_group(g).column(c).compression
                                   for g in range(pf.metadata.num_row_groups)
                                   for c in range(pf.metadata.num_columns)}),
            "types": {f.name: str(f.type) for f in table.schema},
            "rows": [{
                "timestamp_us": us,
                "timestamp_ns": r["timestamp_ns"],
                "line": r["line"],
                "line_bytes": r["line_bytes"].hex() if r["line_bytes"] is not None else None,
                "labels": dict(r["labels"]),
                "metadata": dict(r["structured_metadata"]),
                "service": r["service"], "env": r["env"], "hostname": r["hostname"], "level": r["level"],
            } for r, us in zip(rows, ts_us)],
        })
print(json.dumps(files))
