;; Kernels of the robust strategies (see robust-kernels.ts), 8 coordinates per turn in the lanes of
;; two f32x4. The N updates' values of a chunk are float32 columns, one per update, whose addresses
;; are listed (i32 each) at $cols; `count` is a multiple of 8.
;;
;;   median (cols, n, count, net, pairs, tile, out)
;;   trimmed_mean (cols, n, count, net, pairs, tile, out, trim)
;;     For each group of 8 coordinates, the N pairs of vectors are copied to $tile (N x 32 bytes)
;;     and sorted there, lane by lane, by a sorting network: $pairs comparators at $net, each two
;;     i32 byte offsets (lo, hi) into the tile, after which tile[lo] <= tile[hi] lane-wise. Then,
;;     for each half of the group (offset 0 and 16 of every tile entry):
;;     median: the middle vector, or the float64 mean of the two middle ones (N even);
;;     trimmed_mean: the float64 sum of vectors trim .. N - trim - 1, in that order, divided by
;;     N - 2 trim (with trim 0 and no comparators: the plain mean).
;;     Both return 1 when an input held a NaN or an infinity, else 0: min and max carry a NaN to
;;     both outputs of every comparator it meets, so after a full network the first entry holds
;;     any NaN or -Inf and the last any +Inf (with no comparators, n = 1 or a plain mean, only
;;     the first column is looked at). Results are meaningful only when 0 is returned.
;;   sq_dist (a, b, count) -> f64: sum of (a[i] - b[i])^2 in float64 (four two-lane sums, then added);
;;     count a multiple of 4.
(module
  (import "env" "mem" (memory 1 65536 shared))

  ;; Copies the group at byte offset $at of every column to the tile and sorts it; returns the
  ;; lanes of the first and last entries whose exponent is all ones (NaN or an infinity).
  (func $sort_group (param $cols i32) (param $n i32) (param $at i32) (param $net i32) (param $pairs i32)
                    (param $tile i32) (result v128)
    (local $i i32) (local $end i32) (local $src i32) (local $lo i32) (local $hi i32)
    (local $a v128) (local $b v128) (local $c v128) (local $d v128)
    (block $copied
      (loop $copy
        (br_if $copied (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $src (i32.add (i32.load (i32.add (local.get $cols) (i32.shl (local.get $i) (i32.const 2))))
                                 (local.get $at)))
        (local.set $lo (i32.add (local.get $tile) (i32.shl (local.get $i) (i32.const 5))))
        (v128.store offset=0 (local.get $lo) (v128.load offset=0 (local.get $src)))
        (v128.store offset=16 (local.get $lo) (v128.load offset=16 (local.get $src)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $copy)))
    (local.set $end (i32.add (local.get $net) (i32.shl (local.get $pairs) (i32.const 3))))
    (block $sorted
      (loop $compare
        (br_if $sorted (i32.ge_u (local.get $net) (local.get $end)))
        (local.set $lo (i32.add (local.get $tile) (i32.load offset=0 (local.get $net))))
        (local.set $hi (i32.add (local.get $tile) (i32.load offset=4 (local.get $net))))
        (local.set $a (v128.load offset=0 (local.get $lo)))
        (local.set $b (v128.load offset=0 (local.get $hi)))
        (local.set $c (v128.load offset=16 (local.get $lo)))
        (local.set $d (v128.load offset=16 (local.get $hi)))
        (v128.store offset=0 (local.get $lo) (f32x4.min (local.get $a) (local.get $b)))
        (v128.store offset=0 (local.get $hi) (f32x4.max (local.get $a) (local.get $b)))
        (v128.store offset=16 (local.get $lo) (f32x4.min (local.get $c) (local.get $d)))
        (v128.store offset=16 (local.get $hi) (f32x4.max (local.get $c) (local.get $d)))
        (local.set $net (i32.add (local.get $net) (i32.const 8)))
        (br $compare)))
    (local.set $lo (i32.add (local.get $tile) (i32.shl (i32.sub (local.get $n) (i32.const 1)) (i32.const 5))))
    (v128.or
      (v128.or
        (i32x4.ge_u (v128.and (v128.load offset=0 (local.get $tile)) (i32x4.splat (i32.const 0x7fffffff)))
                    (i32x4.splat (i32.const 0x7f800000)))
        (i32x4.ge_u (v128.and (v128.load offset=16 (local.get $tile)) (i32x4.splat (i32.const 0x7fffffff)))
                    (i32x4.splat (i32.const 0x7f800000))))
      (v128.or
        (i32x4.ge_u (v128.and (v128.load offset=0 (local.get $lo)) (i32x4.splat (i32.const 0x7fffffff)))
                    (i32x4.splat (i32.const 0x7f800000)))
        (i32x4.ge_u (v128.and (v128.load offset=16 (local.get $lo)) (i32x4.splat (i32.const 0x7fffffff)))
                    (i32x4.splat (i32.const 0x7f800000))))))

  (func (export "median") (param $cols i32) (param $n i32) (param $count i32) (param $net i32)
                          (param $pairs i32) (param $tile i32) (param $out i32) (result i32)
    (local $at i32) (local $end i32) (local $mid i32) (local $half i32) (local $x v128) (local $y v128)
    (local $bad v128)
    (local.set $end (i32.shl (local.get $count) (i32.const 2)))
    ;; The (upper) middle entry of the sorted tile.
    (local.set $mid (i32.add (local.get $tile) (i32.shl (i32.shr_u (local.get $n) (i32.const 1)) (i32.const 5))))
    (block $done
      (loop $group
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $bad
          (v128.or (local.get $bad)
            (call $sort_group (local.get $cols) (local.get $n) (local.get $at) (local.get $net) (local.get $pairs)
                              (local.get $tile))))
        (local.set $half (i32.const 0))
        (loop $halves
          (if (i32.and (local.get $n) (i32.const 1))
            (then
              (v128.store (i32.add (i32.add (local.get $out) (local.get $at)) (local.get $half))
                (v128.load (i32.add (local.get $mid) (local.get $half)))))
            (else
              ;; (x + y) / 2 in float64, lanes 0-1 and 2-3, rounded to float32 and joined.
              (local.set $x (v128.load (i32.sub (i32.add (local.get $mid) (local.get $half)) (i32.const 32))))
              (local.set $y (v128.load (i32.add (local.get $mid) (local.get $half))))
              (v128.store (i32.add (i32.add (local.get $out) (local.get $at)) (local.get $half))
                (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
                  (f32x4.demote_f64x2_zero
                    (f64x2.mul
                      (f64x2.add (f64x2.promote_low_f32x4 (local.get $x)) (f64x2.promote_low_f32x4 (local.get $y)))
                      (f64x2.splat (f64.const 0.5))))
                  (f32x4.demote_f64x2_zero
                    (f64x2.mul
                      (f64x2.add
                        (f64x2.promote_low_f32x4
                          (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $x) (local.get $x)))
                        (f64x2.promote_low_f32x4
                          (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $y) (local.get $y))))
                      (f64x2.splat (f64.const 0.5))))))))
          (local.set $half (i32.add (local.get $half) (i32.const 16)))
          (br_if $halves (i32.lt_u (local.get $half) (i32.const 32))))
        (local.set $at (i32.add (local.get $at) (i32.const 32)))
        (br $group)))
    (v128.any_true (local.get $bad)))

  (func (export "trimmed_mean") (param $cols i32) (param $n i32) (param $count i32) (param $net i32)
                                (param $pairs i32) (param $tile i32) (param $out i32) (param $trim i32)
                                (result i32)
    (local $at i32) (local $end i32) (local $p i32) (local $first i32) (local $last i32) (local $half i32)
    (local $bad v128)
    (local $kept v128) (local $v v128) (local $lo v128) (local $hi v128)
    (local.set $end (i32.shl (local.get $count) (i32.const 2)))
    (local.set $kept (f64x2.splat (f64.convert_i32_u (i32.sub (local.get $n) (i32.shl (local.get $trim) (i32.const 1))))))
    ;; The kept entries: tile[trim] .. tile[n - trim - 1].
    (local.set $first (i32.add (local.get $tile) (i32.shl (local.get $trim) (i32.const 5))))
    (local.set $last (i32.add (local.get $tile) (i32.shl (i32.sub (local.get $n) (local.get $trim)) (i32.const 5))))
    (block $done
      (loop $group
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $bad
          (v128.or (local.get $bad)
            (call $sort_group (local.get $cols) (local.get $n) (local.get $at) (local.get $net) (local.get $pairs)
                              (local.get $tile))))
        (local.set $half (i32.const 0))
        (loop $halves
          (local.set $lo (f64x2.splat (f64.const 0)))
          (local.set $hi (f64x2.splat (f64.const 0)))
          (local.set $p (i32.add (local.get $first) (local.get $half)))
          (block $summed
            (loop $add
              (br_if $summed (i32.ge_u (local.get $p) (local.get $last)))
              (local.set $v (v128.load (local.get $p)))
              (local.set $lo (f64x2.add (local.get $lo) (f64x2.promote_low_f32x4 (local.get $v))))
              (local.set $hi (f64x2.add (local.get $hi)
                (f64x2.promote_low_f32x4
                  (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v)))))
              (local.set $p (i32.add (local.get $p) (i32.const 32)))
              (br $add)))
          (v128.store (i32.add (i32.add (local.get $out) (local.get $at)) (local.get $half))
            (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
              (f32x4.demote_f64x2_zero (f64x2.div (local.get $lo) (local.get $kept)))
              (f32x4.demote_f64x2_zero (f64x2.div (local.get $hi) (local.get $kept)))))
          (local.set $half (i32.add (local.get $half) (i32.const 16)))
          (br_if $halves (i32.lt_u (local.get $half) (i32.const 32))))
        (local.set $at (i32.add (local.get $at) (i32.const 32)))
        (br $group)))
    (v128.any_true (local.get $bad)))

  (func (export "sq_dist") (param $a i32) (param $b i32) (param $count i32) (result f64)
    (local $end i32) (local $end8 i32) (local $va v128) (local $vb v128) (local $d v128)
    (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $s3 v128)
    (local.set $end (i32.add (local.get $a) (i32.shl (local.get $count) (i32.const 2))))
    (local.set $end8 (i32.add (local.get $a) (i32.shl (i32.and (local.get $count) (i32.const -8)) (i32.const 2))))
    ;; Eight values a turn, each of a and b loaded once, into four independent sums (so the adds
    ;; do not wait on each other). The difference in float32 is exact only sometimes: take it in
    ;; float64, as JS does.
    (block $done8
      (loop $turn
        (br_if $done8 (i32.ge_u (local.get $a) (local.get $end8)))
        (local.set $va (v128.load offset=0 (local.get $a)))
        (local.set $vb (v128.load offset=0 (local.get $b)))
        (local.set $d (f64x2.sub (f64x2.promote_low_f32x4 (local.get $va)) (f64x2.promote_low_f32x4 (local.get $vb))))
        (local.set $s0 (f64x2.add (local.get $s0) (f64x2.mul (local.get $d) (local.get $d))))
        (local.set $d (f64x2.sub
          (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $va) (local.get $va)))
          (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $vb) (local.get $vb)))))
        (local.set $s1 (f64x2.add (local.get $s1) (f64x2.mul (local.get $d) (local.get $d))))
        (local.set $va (v128.load offset=16 (local.get $a)))
        (local.set $vb (v128.load offset=16 (local.get $b)))
        (local.set $d (f64x2.sub (f64x2.promote_low_f32x4 (local.get $va)) (f64x2.promote_low_f32x4 (local.get $vb))))
        (local.set $s2 (f64x2.add (local.get $s2) (f64x2.mul (local.get $d) (local.get $d))))
        (local.set $d (f64x2.sub
          (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $va) (local.get $va)))
          (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $vb) (local.get $vb)))))
        (local.set $s3 (f64x2.add (local.get $s3) (f64x2.mul (local.get $d) (local.get $d))))
        (local.set $a (i32.add (local.get $a) (i32.const 32)))
        (local.set $b (i32.add (local.get $b) (i32.const 32)))
        (br $turn)))
    (if (i32.lt_u (local.get $a) (local.get $end))
      (then
          (local.set $va (v128.load offset=0 (local.get $a)))
          (local.set $vb (v128.load offset=0 (local.get $b)))
          (local.set $d (f64x2.sub (f64x2.promote_low_f32x4 (local.get $va)) (f64x2.promote_low_f32x4 (local.get $vb))))
          (local.set $s0 (f64x2.add (local.get $s0) (f64x2.mul (local.get $d) (local.get $d))))
          (local.set $d (f64x2.sub
            (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $va) (local.get $va)))
            (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $vb) (local.get $vb)))))
          (local.set $s1 (f64x2.add (local.get $s1) (f64x2.mul (local.get $d) (local.get $d))))
      ))
    (local.set $s0 (f64x2.add (f64x2.add (local.get $s0) (local.get $s1)) (f64x2.add (local.get $s2) (local.get $s3))))
    (f64.add (f64x2.extract_lane 0 (local.get $s0)) (f64x2.extract_lane 1 (local.get $s0))))
)
