/** Safetensors codec: header validation, encoding, streaming reads and half-precision conversions. */
export * from './dtypes.js';
export * from './half.js';
export * from './header.js';
export * from './encode.js';
export * from './read.js';
