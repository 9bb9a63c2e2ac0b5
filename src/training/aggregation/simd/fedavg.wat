;; Decode and accumulate kernels of FedAvg (see kernels.ts), 4 elements per turn. n is a multiple
;; of 4 in every function; pointers are byte addresses in the imported (shared) memory.
;;
;;   add32/add64 (sumPtr, valuesPtr, n, weight): sum[i] += weight * values[i], values float32,
;;     the sum float32 or float64. The value and the weight multiply and add in float64, and a
;;     float32 sum is rounded once on store: exactly what the scalar reference
;;     (weightedAccumulate) computes.
;;   f16/bf16 (srcPtr, dstPtr, n): dst[i] = float32 of the 16-bit src[i], exact.
;;   scale32/scale64 (sumPtr, dstPtr, n, factor): dst[i] = float32(sum[i] * factor), the product
;;     in float64 (the mean written out: factor = 1 / total weight), as the JS reference does.
;;   to_bf16 (srcPtr, dstPtr, n): dst[i] = bfloat16 bits of the float32 src[i], rounded to nearest
;;     even, NaN kept NaN (quiet), as half.ts does; n a multiple of 8. dst may lie at or below src
;;     in the same bytes (each turn reads its 32 bytes before it writes 16).
;;
;; F16/BF16 updates are decoded into a small float32 tile that stays in the first-level cache,
;; then added from there: V8 does not inline wasm calls, so one loop per job, none per pair.
(module
  (import "env" "mem" (memory 1 65536 shared))

  (func (export "add32") (param $s i32) (param $v i32) (param $n i32) (param $weight f64)
    (local $end i32) (local $w v128) (local $old v128) (local $new v128)
    (local.set $w (f64x2.splat (local.get $weight)))
    (local.set $end (i32.add (local.get $v) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $turn
        (br_if $done (i32.ge_u (local.get $v) (local.get $end)))
        (local.set $old (v128.load (local.get $s)))
        (local.set $new (v128.load (local.get $v)))
        (v128.store (local.get $s)
          ;; Lanes 0-1 and lanes 2-3 each in float64, rounded to float32, joined back.
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.add (f64x2.promote_low_f32x4 (local.get $old))
                (f64x2.mul (f64x2.promote_low_f32x4 (local.get $new)) (local.get $w))))
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.promote_low_f32x4
                  (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $old) (local.get $old)))
                (f64x2.mul
                  (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $new) (local.get $new)))
                  (local.get $w))))))
        (local.set $v (i32.add (local.get $v) (i32.const 16)))
        (local.set $s (i32.add (local.get $s) (i32.const 16)))
        (br $turn))))

  (func (export "add64") (param $s i32) (param $v i32) (param $n i32) (param $weight f64)
    (local $end i32) (local $w v128) (local $new v128)
    (local.set $w (f64x2.splat (local.get $weight)))
    (local.set $end (i32.add (local.get $v) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $turn
        (br_if $done (i32.ge_u (local.get $v) (local.get $end)))
        (local.set $new (v128.load (local.get $v)))
        (v128.store offset=0 (local.get $s)
          (f64x2.add (v128.load offset=0 (local.get $s))
            (f64x2.mul (f64x2.promote_low_f32x4 (local.get $new)) (local.get $w))))
        (v128.store offset=16 (local.get $s)
          (f64x2.add (v128.load offset=16 (local.get $s))
            (f64x2.mul
              (f64x2.promote_low_f32x4
                (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $new) (local.get $new)))
              (local.get $w))))
        (local.set $v (i32.add (local.get $v) (i32.const 16)))
        (local.set $s (i32.add (local.get $s) (i32.const 32)))
        (br $turn))))

  ;; bfloat16 is the high half of a float32.
  (func (export "bf16") (param $p i32) (param $d i32) (param $n i32)
    (local $end i32)
    (local.set $end (i32.add (local.get $p) (i32.shl (local.get $n) (i32.const 1))))
    (block $done
      (loop $turn
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (v128.store (local.get $d) (i32x4.shl (v128.load16x4_u (local.get $p)) (i32.const 16)))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (local.set $d (i32.add (local.get $d) (i32.const 16)))
        (br $turn))))

  ;; IEEE half: Inf/NaN get the all-ones float32 exponent with the payload moved up; normal and
  ;; subnormal halves are exact as (bits without the sign << 13) read as a float32, times 2^112.
  (func (export "f16") (param $p i32) (param $d i32) (param $n i32)
    (local $end i32) (local $x v128) (local $em v128)
    (local.set $end (i32.add (local.get $p) (i32.shl (local.get $n) (i32.const 1))))
    (block $done
      (loop $turn
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $x (v128.load16x4_u (local.get $p)))
        (local.set $em (v128.and (local.get $x) (i32x4.splat (i32.const 0x7fff))))
        (v128.store (local.get $d)
          (v128.or
            (v128.bitselect
              (v128.or (i32x4.shl (local.get $em) (i32.const 13)) (i32x4.splat (i32.const 0x7f800000)))
              (f32x4.mul (i32x4.shl (local.get $em) (i32.const 13)) (f32x4.splat (f32.const 0x1p112)))
              (i32x4.gt_u (local.get $em) (i32x4.splat (i32.const 0x7bff))))
            (i32x4.shl (v128.and (local.get $x) (i32x4.splat (i32.const 0x8000))) (i32.const 16))))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (local.set $d (i32.add (local.get $d) (i32.const 16)))
        (br $turn))))
;; The float32 sum times the factor, 4 per turn: lanes 0-1 and 2-3 in float64, rounded, joined.
  (func (export "scale32") (param $s i32) (param $d i32) (param $n i32) (param $factor f64)
    (local $end i32) (local $f v128) (local $v v128)
    (local.set $f (f64x2.splat (local.get $factor)))
    (local.set $end (i32.add (local.get $s) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $turn
        (br_if $done (i32.ge_u (local.get $s) (local.get $end)))
        (local.set $v (v128.load (local.get $s)))
        (v128.store (local.get $d)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero (f64x2.mul (f64x2.promote_low_f32x4 (local.get $v)) (local.get $f)))
            (f32x4.demote_f64x2_zero
              (f64x2.mul
                (f64x2.promote_low_f32x4
                  (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v)))
                (local.get $f)))))
        (local.set $s (i32.add (local.get $s) (i32.const 16)))
        (local.set $d (i32.add (local.get $d) (i32.const 16)))
        (br $turn))))

  ;; The float64 sum times the factor, 4 per turn (two f64x2), rounded and joined.
  (func (export "scale64") (param $s i32) (param $d i32) (param $n i32) (param $factor f64)
    (local $end i32) (local $f v128)
    (local.set $f (f64x2.splat (local.get $factor)))
    (local.set $end (i32.add (local.get $s) (i32.shl (local.get $n) (i32.const 3))))
    (block $done
      (loop $turn
        (br_if $done (i32.ge_u (local.get $s) (local.get $end)))
        (v128.store (local.get $d)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero (f64x2.mul (v128.load offset=0 (local.get $s)) (local.get $f)))
            (f32x4.demote_f64x2_zero (f64x2.mul (v128.load offset=16 (local.get $s)) (local.get $f)))))
        (local.set $s (i32.add (local.get $s) (i32.const 32)))
        (local.set $d (i32.add (local.get $d) (i32.const 16)))
        (br $turn))))

  (func (export "to_bf16") (param $s i32) (param $d i32) (param $n i32)
    (local $end i32) (local $x v128) (local $y v128)
    (local.set $end (i32.add (local.get $s) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $turn
        (br_if $done (i32.ge_u (local.get $s) (local.get $end)))
        (local.set $x (v128.load offset=0 (local.get $s)))
        (local.set $y (v128.load offset=16 (local.get $s)))
        ;; Per lane: NaN -> (bits >> 16) | 0x40; else (bits + 0x7fff + lowest kept bit) >> 16.
        ;; Both fit 16 bits, so the saturating narrow keeps them as they are.
        (v128.store (local.get $d)
          (i16x8.narrow_i32x4_u
            (v128.bitselect
              (v128.or (i32x4.shr_u (local.get $x) (i32.const 16)) (i32x4.splat (i32.const 0x40)))
              (i32x4.shr_u
                (i32x4.add (i32x4.add (local.get $x) (i32x4.splat (i32.const 0x7fff)))
                  (v128.and (i32x4.shr_u (local.get $x) (i32.const 16)) (i32x4.splat (i32.const 1))))
                (i32.const 16))
              (i32x4.gt_u (v128.and (local.get $x) (i32x4.splat (i32.const 0x7fffffff)))
                          (i32x4.splat (i32.const 0x7f800000))))
            (v128.bitselect
              (v128.or (i32x4.shr_u (local.get $y) (i32.const 16)) (i32x4.splat (i32.const 0x40)))
              (i32x4.shr_u
                (i32x4.add (i32x4.add (local.get $y) (i32x4.splat (i32.const 0x7fff)))
                  (v128.and (i32x4.shr_u (local.get $y) (i32.const 16)) (i32x4.splat (i32.const 1))))
                (i32.const 16))
              (i32x4.gt_u (v128.and (local.get $y) (i32x4.splat (i32.const 0x7fffffff)))
                          (i32x4.splat (i32.const 0x7f800000))))))
        (local.set $s (i32.add (local.get $s) (i32.const 32)))
        (local.set $d (i32.add (local.get $d) (i32.const 16)))
        (br $turn))))
)
