#!/usr/bin/env python3
"""make_corpus.py: write the seed corpus of every fuzz target into
tests/fuzz/corpus/<target>/ : small, valid samples of each format (see the
layouts in formats/README.md). Run from the repository root; the images are
tests/fuzz/seed.jpg and seed.png (16x16, from CPython's test data)."""
import os, struct, zlib, json

R = 'tests/fuzz/corpus'
JPG = open('tests/fuzz/seed.jpg', 'rb').read()
PNG = open('tests/fuzz/seed.png', 'rb').read()

def out(t, name, b):
    os.makedirs(f'{R}/{t}', exist_ok=True)
    open(f'{R}/{t}/{name}', 'wb').write(b)

def rec(enc, ch, label, w, h, payload):
    return b'MOCR' + struct.pack('<HBBiIIIII', 1, enc, ch, label, w, h, len(payload), zlib.crc32(payload), 0) + payload

def pre(t, v=1): return b'MOCW' + struct.pack('<HH', v, t)

# record parser
raw = bytes(range(48))
out('fuzz_record', 'raw4x4x3', rec(0, 3, 2, 4, 4, raw))
out('fuzz_record', 'gray', rec(0, 1, -1, 3, 2, bytes(6)))
out('fuzz_record', 'jpeg', rec(1, 3, 5, 16, 16, JPG))
out('fuzz_record', 'png', rec(2, 3, 1, 16, 16, PNG))
# wire data messages
out('fuzz_wire', 'sample', pre(1) + struct.pack('<IIQ', 3, 0, 17))
pair = pre(2) + struct.pack('<IiQHHBBH', 1, 4, 9, 2, 2, 3, 0, 0)
out('fuzz_wire', 'pair', pair)
out('fuzz_wire', 'failed', pre(3) + struct.pack('<IiQ', 2, -32999, 5) + b'record 5: CRC mismatch')
out('fuzz_wire', 'failed_empty', pre(3) + struct.pack('<IiQ', 2, -32998, 6))
# PAIRS: u32 data length, then the header frame (2 pairs of 2x2x3: 2*2*12 bytes)
pairs = pre(11) + struct.pack('<II', 2, 0) + pair[8:].rjust(24, b'\0')
pairs = pre(11) + struct.pack('<II', 2, 0) + (pre(2) + struct.pack('<IiQHHBBH', 1, 4, 9, 2, 2, 3, 0, 0)) + \
    (pre(2) + struct.pack('<IiQHHBBH', 1, 4, 10, 2, 2, 3, 0, 0))
out('fuzz_wire', 'pairs', struct.pack('<I', 48) + pairs)
# SAMPLES (version 2): u32 data length, then the header frame (records of 40 and 33 bytes)
out('fuzz_wire', 'samples', struct.pack('<I', 73) + pre(12, 2) + struct.pack('<II', 2, 0) +
    struct.pack('<IIQ', 1, 40, 7) + struct.pack('<IIQ', 1, 33, 8))
# control messages
out('fuzz_pipeline', 'ready', pre(4) + struct.pack('<IQ', 8, 100))
out('fuzz_pipeline', 'ready2', pre(4, 2) + struct.pack('<IQI', 64, 100, 16))
out('fuzz_pipeline', 'heartbeat', pre(5))
out('fuzz_pipeline', 'stop', pre(7))
out('fuzz_pipeline', 'busy', pre(16, 5))
out('fuzz_pipeline', 'hello', pre(8) + struct.pack('<IQ', 0xFFFFFFFF, 50000))
out('fuzz_pipeline', 'ack', pre(9) + struct.pack('<II', 1, 3) + struct.pack('<3Q', 4, 5, 6))
out('fuzz_pipeline', 'epoch_end', pre(6) + struct.pack('<IQI', 1, 49998, 2) + struct.pack('<2Q', 7, 99))
out('fuzz_pipeline', 'end', pre(10) + struct.pack('<I', 2))

# safetensors
def st(tensors, meta=None):
    hdr, data = {}, b''
    if meta: hdr['__metadata__'] = meta
    for name, dt, shape, b in tensors:
        hdr[name] = {'dtype': dt, 'shape': shape, 'data_offsets': [len(data), len(data) + len(b)]}
        data += b
    h = json.dumps(hdr).encode()
    h += b' ' * (-len(h) % 8)
    return struct.pack('<Q', len(h)) + h + data
out('fuzz_safetensors', 'one', st([('w', 'F32', [2, 2], struct.pack('<4f', 1, 2, 3, 4))]))
out('fuzz_safetensors', 'two', st([('a.b', 'F32', [3], struct.pack('<3f', 1, -2, 0.5)), ('n', 'I64', [], struct.pack('<q', 7))],
                                  {'epoch': '3', 'arch': 'resnet18'}))
out('fuzz_safetensors', 'empty', st([]))

# CIFAR / IDX (first byte: 0 cifar, 1 idx, 2 idx .gz names; idx: u16 image-file length)
c = bytes([3]) + bytes(i % 256 for i in range(3072))
out('fuzz_sources', 'cifar1', b'\0' + c)
out('fuzz_sources', 'cifar2', b'\0' + c + bytes([9]) + bytes(3072))
img = struct.pack('>IIII', 0x803, 2, 3, 2) + bytes(range(12))
lab = struct.pack('>II', 0x801, 2) + bytes([1, 7])
out('fuzz_sources', 'idx', b'\1' + struct.pack('<H', len(img)) + img + lab)
out('fuzz_sources', 'idx_gz', b'\2' + struct.pack('<H', len(gz := zlib.compress(b'', 9)) * 0 + len(img)) + img + lab)
gi = __import__('gzip').compress(img, mtime=0); gl = __import__('gzip').compress(lab, mtime=0)  # mtime 0: the same bytes every run
out('fuzz_sources', 'idx_gzreal', b'\2' + struct.pack('<H', len(gi)) + gi + gl)

# augment: 8 bytes (encoding, channels, label, u16 w, u16 h, flags) + payload
out('fuzz_augment', 'jpeg', bytes([1, 2, 5]) + struct.pack('<HH', 15, 15) + b'\0' + JPG)
out('fuzz_augment', 'png', bytes([2, 2, 1]) + struct.pack('<HH', 15, 15) + b'\0' + PNG)
out('fuzz_augment', 'raw', bytes([0, 2, 1]) + struct.pack('<HH', 7, 7) + b'\0' + bytes(range(192)))
out('fuzz_augment', 'raw_fit', bytes([0, 0, 1]) + struct.pack('<HH', 0, 0) + bytes([1 | 14]) + bytes(range(64)))

# dataset metadata: entries (u8 key id, u16 length, value); key ids as in fuzz_meta.c
def ent(k, v): return bytes([k]) + struct.pack('<H', len(v)) + v
u64 = lambda x: struct.pack('<Q', x)
meta = (ent(0, u64(1)) + ent(1, u64(5)) + ent(2, u64(0)) + ent(3, u64(1000)) + ent(4, u64(1)) + ent(5, b'/data/x') +
        ent(6, b'folder') + ent(7, b'cat\ndog\n') + ent(8, u64(2) + u64(3)) + ent(9, u64(0) + u64(5) + u64(0)) +
        ent(10, struct.pack('<4I', 32, 32, 32, 32)))
out('fuzz_meta', 'valid', meta)
out('fuzz_meta', 'shuffled', meta + ent(11, u64(42)))

# checkpoints (fuzz_ckpt): the tiny model of fuzz_ckpt.c saved by ckpt_save
# itself (build/fuzz/fuzz_ckpt with MOCO_FUZZ_CKPT_SEEDS set: `make fuzz`
# first), at an epoch's end and mid-epoch; then the same without the
# CRC-32s (a file from before them: legal), so that changed bytes reach the
# tensor checks, once with a config that has every field
import subprocess, tempfile, shutil
CFG = {'arch': 'resnet18-cifar', 'width': 1, 'mlp': 1, 'dim': 4, 'K': 8, 'm': 0.99, 'T': 0.1, 'batch_size': 2, 'ranks': 1,
       'lr': 0.06, 'momentum': 0.9, 'wd': 0.0005, 'cos': 1, 'schedule': '', 'warmup_epochs': 0, 'epochs': 3, 'bn_splits': 1,
       'symmetric': 0, 'size': 8, 'precision': 'fp32', 'seed': 3, 'count': 64}
FULL = dict(CFG, cos=0, schedule='120,160', normalize='cifar', mean=[0.4914, 0.4822, 0.4465], std=[0.247, 0.2435, 0.2616])

def st_rehead(b, meta):
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n])
    h['__metadata__'] = meta
    j = json.dumps(h, separators=(',', ':')).encode()
    j += b' ' * (-len(j) % 8)
    return struct.pack('<Q', len(j)) + j + b[8 + n:]

if os.path.exists('build/fuzz/fuzz_ckpt'):
    d = tempfile.mkdtemp()
    subprocess.run(['build/fuzz/fuzz_ckpt'], env=dict(os.environ, MOCO_FUZZ_CKPT_SEEDS=d), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for n in ('epoch', 'midepoch'):
        out('fuzz_ckpt', n, open(f'{d}/{n}.safetensors', 'rb').read())
    shutil.rmtree(d)
    mid = open(f'{R}/fuzz_ckpt/midepoch', 'rb').read()
    out('fuzz_ckpt', 'midepoch_nocrc', st_rehead(mid, {'format': 'moco-checkpoint-1', 'config': json.dumps(CFG)}))
    out('fuzz_ckpt', 'full_config_nocrc', st_rehead(mid, {'format': 'moco-checkpoint-1', 'config': json.dumps(FULL)}))
    out('fuzz_ckpt', 'no_metadata', st_rehead(mid, {}))
else:
    print('make_corpus.py: build/fuzz/fuzz_ckpt not built (make fuzz): corpus/fuzz_ckpt left as it is')

# the config string alone (fuzz_ckpt_config)
out('fuzz_ckpt_config', 'train', json.dumps(CFG, separators=(',', ':')).encode())
out('fuzz_ckpt_config', 'full', json.dumps(FULL).encode())
out('fuzz_ckpt_config', 'ranks', json.dumps(dict(CFG, ranks=4, batch_size=256, precision='bf16', symmetric=1)).encode())
out('fuzz_ckpt_config', 'partial', b'{"arch":"resnet50","width":64,"epochs":200}')

# wisdom lines (fuzz_wisdom): @C, @B, @T are this process's key there
def wl(prec, layer, pas, shape, choice, ms, key=('@C', '@B', '@T')):
    c, b, t = key
    lay = f'"layer":"{layer}",' if layer else ''
    m = ','.join(f'"{k}":{v}' for k, v in ms.items())
    return (f'{{"cpu":"{c}","build":"{b}","threads":{t},"precision":"{prec}",{lay}"pass":"{pas}",'
            f'"shape":[{",".join(map(str, shape))}],"choice":"{choice}","ms":{{{m}}}}}\n').encode()
ours = (wl('fp32', None, 'fwd', [256, 64, 32, 32, 64, 3, 1, 1], 'direct', {'gemm': 21.3, 'direct': 9.8}) +
        wl('fp32', None, 'bwd', [256, 64, 32, 32, 64, 3, 1, 1], 'gemm', {'gemm': 20.1, 'direct': 29.8}) +
        wl('fp32', None, 'bwd-w', [256, 3, 32, 32, 64, 3, 1, 1], 'gemm', {'gemm': 3.5}) +
        wl('bf16', 'linear', 'fwd', [256, 512, 1, 1, 2048, 1, 1, 0], 'bf16', {'gemm': 1.5, 'bf16': 0.7}))
out('fuzz_wisdom', 'ours', ours)
out('fuzz_wisdom', 'mixed', ours[:200] + wl('fp32', None, 'fwd', [8, 3, 8, 8, 4, 3, 1, 1], 'direct', {'direct': 1},
                                          key=('AMD EPYC 9B45 (family 26, model 2)', '1234567-1764410000-Zen', '2')) +
    b'{"cpu":"@C","build":"@B","threads":@T,"precision":"fp32","pass":"fwd"}\n' + ours[200:] + b'{"cpu":"@C","bui')

# metrics.jsonl (fuzz_metrics): u32 LE the checkpoint's step, then the file
step_r = lambda e, s, l, a: f'{{"type":"step","epoch":{e},"step":{s},"loss":{l},"acc":{a},"lr":0.06,"pairs_per_s":812.5}}\n'
def epoch_r(e, s, knn, extra=''):
    k = 'null' if knn is None else knn
    return (f'{{"type":"epoch","epoch":{e},"step":{s},"loss":7.1234,"acc":12.5,"lr":0.06,"pairs":64,"dropped":0,"failed":0,'
            f'"seconds":3.2,"pairs_per_s":20.1,"starved_pct":1.5,"knn_top1":{k},"peak_rss_mb":512{extra}}}\n')
run = ''.join(step_r(0, s, 8 - s / 10, s) for s in (4, 8)) + epoch_r(0, 8, 31.25) + step_r(1, 12, 7.3, 14.5) + \
      epoch_r(1, 16, None) + epoch_r(1, 16, 35.5, ',"recovered":true')
out('fuzz_metrics', 'run', struct.pack('<I', 16) + run.encode())
out('fuzz_metrics', 'rewind_torn', struct.pack('<I', 8) + run.encode() + b'{"type":"step","epoch":2,"st')
out('fuzz_metrics', 'reference', struct.pack('<I', 0) +
    b''.join(f'{{"epoch":{e},"loss":{8 - e / 3:.4f},"knn_top1":{30 + e},"pairs_per_s":900}}\n'.encode() for e in range(1, 5)))

# CURVE key files (fuzz_zsec): first byte bit 0 = need_secret, then the file.
# Written by `moco keygen` (throwaway keys, here only), then the other
# spellings ZPL allows (pyzmq zmq.auth: single quotes, CRLF, no quotes).
KG_HEAD = '#   ****  Generated by moco keygen  ****\n#   ZeroMQ CURVE {}\n#   {}\n\nmetadata\ncurve\n'
KG_PUB, KG_SEC = '&3f8zDHzcALblIgAx6kxN}zqTo!O00H5J(vc}C:>', 'bC{)72l4#Qak6L/EaWy$*fJGvcJul4NF$^sb@Ui<'
kg_sec = (KG_HEAD.format('**Secret** Certificate', 'DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.') +
          f'    public-key = "{KG_PUB}"\n    secret-key = "{KG_SEC}"\n').encode()
kg_pub = (KG_HEAD.format('Public Certificate', "Give it to the peers that must know this key (a server's allowed/ directory).") +
          f'    public-key = "{KG_PUB}"\n').encode()
out('fuzz_zsec', 'keygen_secret', b'\1' + kg_sec)
out('fuzz_zsec', 'keygen_public', b'\0' + kg_pub)
out('fuzz_zsec', 'pyzmq_secret_crlf', b'\1' + f"metadata\r\n    user-id = 'x'\r\ncurve\r\n    public-key = '{KG_PUB}'\r\n"
    f"    secret-key = '{KG_SEC}'  # comment\r\n".encode())
out('fuzz_zsec', 'bare_public', b'\0' + f'curve\n\tpublic-key={KG_PUB}\n'.encode())

# CIFAR with batches.meta.txt (fuzz_sources layout 3: u16 LE meta length, meta, test_batch.bin)
def cifar_meta(m, batch=c): return b'\3' + struct.pack('<H', len(m)) + m + batch
NAMES = b'airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n'
out('fuzz_sources', 'cifar_meta', cifar_meta(NAMES))
out('fuzz_sources', 'cifar_meta_crlf', cifar_meta(NAMES.replace(b'\n', b'\r\n') + b'\n\n'))
out('fuzz_sources', 'cifar_meta_nine', cifar_meta(b'a\nb\nc\nd\ne\nf\ng\nh\ni'))

# `moco sink --resume-indices` files (fuzz_sink): u16 LE count - 1, then the file
out('fuzz_sink', 'lines', struct.pack('<H', 99) + b'0\n7\n8\n99\n42\n')
out('fuzz_sink', 'spaces', struct.pack('<H', 15) + b'  3 1\t4 1\r\n5 9 2 6 15\n')
out('fuzz_sink', 'empty', struct.pack('<H', 0))
out('fuzz_sink', 'too_big', struct.pack('<H', 9) + b'1\n10\n')

# evalmodel_describe (fuzz_evalmodel): 2 bytes of flags (see fuzz_evalmodel.c), then the config string
def ev_flags(arch=0, mlp=0, norm=0, width=0, dim=0, size=0):
    return bytes([arch | mlp << 3 | norm << 4, width | dim << 2 | size << 4])
out('fuzz_evalmodel', 'train', ev_flags() + json.dumps(CFG, separators=(',', ':')).encode())
out('fuzz_evalmodel', 'full', ev_flags() + json.dumps(FULL).encode())
out('fuzz_evalmodel', 'full_flags_agree', ev_flags(arch=4, mlp=1, norm=1, width=1, size=2) + json.dumps(FULL).encode())
out('fuzz_evalmodel', 'flags_contradict', ev_flags(arch=1, norm=2, width=2, dim=2) + json.dumps(FULL).encode())
out('fuzz_evalmodel', 'imagenet', ev_flags(norm=2) + json.dumps(dict(CFG, arch='resnet50', width=64, dim=128, size=224,
    normalize='imagenet', mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])).encode())
out('fuzz_evalmodel', 'no_config', ev_flags(arch=3, dim=3, size=3))

# metrics.jsonl on resume (fuzz_recover): u32 LE the epoch whose record is looked for, then the file
out('fuzz_recover', 'present', struct.pack('<I', 1) + run.encode())
out('fuzz_recover', 'absent', struct.pack('<I', 2) + run.encode() + b'{"type":"resume","epoch":2,"step":24,"from":"x","dropped_records":0}\n')
out('fuzz_recover', 'torn', struct.pack('<I', 2) + run.encode() + b'{"type":"epoch","epoch":2,"st')
out('fuzz_recover', 'crlf', struct.pack('<I', 0) + run.replace('\n', '\r\n').encode())
