;; NaN/Inf detection on raw bits (see finite-scan.ts). A value is non-finite when its exponent
;; field is all ones, whatever its sign and payload: (bits & mask) == mask, lane by lane.
;;
;; Both functions scan [ptr, end), a multiple of 64 bytes, 64 bytes per turn, and return the
;; address of the first 64-byte block holding a non-finite lane, or `end` when there is none.
;; The build (scripts/build-wasm.ts) also writes a variant importing a shared memory.
(module
  (import "e" "m" (memory 1 65536)) ;; +shared

  ;; 32-bit lanes (F32): mask 0x7f800000.
  (func (export "s32") (param $ptr i32) (param $end i32) (param $mask i32) (result i32)
    (local $m v128)
    (local.set $m (i32x4.splat (local.get $mask)))
    (block $found
      (loop $blocks
        (br_if $found (i32.ge_u (local.get $ptr) (local.get $end)))
        (br_if $found
          (v128.any_true
            (v128.or
              (v128.or
                (i32x4.eq (v128.and (v128.load offset=0 (local.get $ptr)) (local.get $m)) (local.get $m))
                (i32x4.eq (v128.and (v128.load offset=16 (local.get $ptr)) (local.get $m)) (local.get $m)))
              (v128.or
                (i32x4.eq (v128.and (v128.load offset=32 (local.get $ptr)) (local.get $m)) (local.get $m))
                (i32x4.eq (v128.and (v128.load offset=48 (local.get $ptr)) (local.get $m)) (local.get $m))))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 64)))
        (br $blocks)))
    (local.get $ptr))

  ;; 16-bit lanes (F16: mask 0x7c00, BF16: mask 0x7f80).
  (func (export "s16") (param $ptr i32) (param $end i32) (param $mask i32) (result i32)
    (local $m v128)
    (local.set $m (i16x8.splat (local.get $mask)))
    (block $found
      (loop $blocks
        (br_if $found (i32.ge_u (local.get $ptr) (local.get $end)))
        (br_if $found
          (v128.any_true
            (v128.or
              (v128.or
                (i16x8.eq (v128.and (v128.load offset=0 (local.get $ptr)) (local.get $m)) (local.get $m))
                (i16x8.eq (v128.and (v128.load offset=16 (local.get $ptr)) (local.get $m)) (local.get $m)))
              (v128.or
                (i16x8.eq (v128.and (v128.load offset=32 (local.get $ptr)) (local.get $m)) (local.get $m))
                (i16x8.eq (v128.and (v128.load offset=48 (local.get $ptr)) (local.get $m)) (local.get $m))))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 64)))
        (br $blocks)))
    (local.get $ptr))
)
