// Image file -> RGBA pixels, in the browser.
// PNG: decoded by png.js, giving exactly the bytes Pillow decodes (no premultiplied alpha, no colour
// management). Other formats (JPEG, WebP, ...): the browser's decoder via an ImageBitmap with colour
// space conversion and premultiplication off; JPEG decoders can differ from Pillow's libjpeg-turbo by
// a level or so in some pixels, so only PNG input is guaranteed bit-identical to `kerascnn validate`
// (WebP in Chromium: measured identical, tests/webp_parity.test.mjs). A file the browser cannot decode
// (a damaged file, or a format it lacks, such as HEIC outside Safari) is an error that names it.
import { decodePng, isPng } from "./png.js";

export async function decodeImageFile(blob, { exifRotate = true } = {}) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  if (isPng(bytes)) {
    const png = await decodePng(bytes);
    return { rgba: png.rgba, width: png.width, height: png.height, decoder: "PNG (exact, like Pillow)" };
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(new Blob([bytes], { type: blob.type }), {
      premultiplyAlpha: "none",
      colorSpaceConversion: "none",
      imageOrientation: exifRotate ? "from-image" : "none",
    });
  } catch (e) {
    const name = blob.name ? `'${blob.name}'` : "the image";
    const type = blob.type ? ` (${blob.type})` : "";
    throw new Error(`${name}${type}: this browser cannot decode it, a damaged file or a format it does not read (${e?.message ?? e}); try a PNG, JPEG or WebP`);
  }
  const { width, height } = bitmap;
  const canvas = typeof OffscreenCanvas !== "undefined" ? new OffscreenCanvas(width, height) : Object.assign(document.createElement("canvas"), { width, height });
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close?.();
  const { data } = ctx.getImageData(0, 0, width, height);
  return { rgba: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width, height, decoder: "browser decoder" };
}
