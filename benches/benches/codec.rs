//! Generated-code format: encoding an index into a printed code, and reading
//! a normalized code back into its index, at the default length of 10.
//! Both run on every redemption or generation, uncontended (a `Codec` is
//! read-only), so one thread measures the per-core rate.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use redeem_engine::codec::{CodeFormat, CodeKey, Codec, NormalizedBuf, normalize};

/// Distinct codes cycled through by the decode benches, so branch
/// predictors cannot learn one input.
const SAMPLE_CODES: usize = 1024;

fn codec() -> Codec {
    let format = CodeFormat::new("SPR", 10).expect("a valid format");
    Codec::new(format, &CodeKey::from_bytes([0x5A; 16]))
}

fn uncontended(c: &mut Criterion) {
    let codec = codec();
    let samples: Vec<NormalizedBuf> = (0..SAMPLE_CODES as u64)
        .map(|index| {
            let mut buf = NormalizedBuf::new();
            normalize(&codec.encode(index * 7919), &mut buf).expect("a code normalizes");
            buf
        })
        .collect();
    let printed: Vec<String> = (0..SAMPLE_CODES as u64)
        .map(|index| codec.encode(index).to_string())
        .collect();

    let mut group = c.benchmark_group("codec/uncontended/length10");
    group.throughput(Throughput::Elements(1));

    let mut index = 0u64;
    group.bench_function("encode", |b| {
        b.iter(|| {
            index = (index + 1) & 0xFFFF_FFFF;
            black_box(codec.encode(black_box(index)))
        })
    });

    let mut next = 0usize;
    group.bench_function("decode_body", |b| {
        b.iter(|| {
            next = (next + 1) % SAMPLE_CODES;
            let symbols = codec
                .format()
                .strip_prefix(samples[next].as_bytes())
                .expect("the prefix matches");
            black_box(codec.decode_body(black_box(symbols)))
        })
    });

    let mut next = 0usize;
    group.bench_function("normalize_and_decode", |b| {
        b.iter_batched_ref(
            NormalizedBuf::new,
            |buf| {
                next = (next + 1) % SAMPLE_CODES;
                normalize(black_box(&printed[next]), buf).expect("a code normalizes");
                let symbols = codec.format().strip_prefix(buf.as_bytes()).expect("prefix");
                black_box(codec.decode_body(symbols))
            },
            BatchSize::SmallInput,
        )
    });

    let mut next = 0usize;
    group.bench_function("reject_typo", |b| {
        let typos: Vec<Vec<u8>> = samples
            .iter()
            .map(|buf| {
                let mut symbols = codec
                    .format()
                    .strip_prefix(buf.as_bytes())
                    .unwrap()
                    .to_vec();
                symbols.swap(3, 4);
                if symbols[3] == symbols[4] {
                    symbols[3] = if symbols[3] == b'2' { b'3' } else { b'2' };
                }
                symbols
            })
            .collect();
        b.iter(|| {
            next = (next + 1) % SAMPLE_CODES;
            black_box(codec.decode_body(black_box(&typos[next])))
        })
    });

    group.finish();
}

criterion_group!(benches, uncontended);
criterion_main!(benches);
