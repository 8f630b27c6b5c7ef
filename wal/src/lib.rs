//! redeem-wal: a segmented, memory-mapped write-ahead log (under construction).
