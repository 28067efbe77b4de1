"""e2e_data.py: the dataset the end-to-end tests (e2e_*.py) stream: the first
N images of Fashion-MNIST's test split (Debian's dataset-fashion-mnist),
packed fresh into TMP/db."""
import os
import shutil
import subprocess

SRC = "/usr/share/datasets/fashion-mnist"
N = 300


def fresh_db(moco, tmp):
    """TMP emptied (mode 0700) and TMP/db made: its path, or None (after saying
    "skipped: ...") where the package is absent."""
    if not os.path.isdir(SRC):
        print("skipped: %s absent" % SRC)
        return None
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp, mode=0o700)
    db = os.path.join(tmp, "db")
    subprocess.run([moco, "mkdb", SRC, db, "--split", "test", "--limit", str(N), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    return db
