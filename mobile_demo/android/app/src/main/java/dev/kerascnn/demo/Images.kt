package dev.kerascnn.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.ImageDecoder
import android.graphics.Matrix
import android.net.Uri
import android.os.Build
import kotlin.math.max
import kotlin.math.roundToInt

/** Bitmaps for the classifier: software ARGB_8888, so that `getPixels` gives what the core expects. */
object Images {
    /** Longest side a picked photo is decoded at (a 12-megapixel photo would take ~48 MB as ints). */
    const val MAX_SIDE = 2048

    /**
     * A picked image, decoded as `kerascnn validate` would see it (the whole picture, resized later by
     * the core's Pillow-exact bilinear filter). ImageDecoder (Android 9+) applies the EXIF rotation,
     * as `kerascnn validate` does (`kerascnn.data.viewable`); the core composites transparency over
     * white. Photos larger than [MAX_SIDE] are decoded smaller first. Formats: what the platform
     * decodes (JPEG, PNG, GIF, BMP, WebP on every supported version; HEIF/HEIC from Android 8.0, API 26;
     * AVIF from Android 12; DNG through ImageDecoder): see core/README.md, "Decoding".
     */
    fun decode(context: Context, uri: Uri): Bitmap {
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.P) {
            val source = ImageDecoder.createSource(context.contentResolver, uri)
            return ImageDecoder.decodeBitmap(source) { decoder, info, _ ->
                decoder.allocator = ImageDecoder.ALLOCATOR_SOFTWARE
                decoder.isMutableRequired = false
                val w = info.size.width
                val h = info.size.height
                val longest = max(w, h)
                if (longest > MAX_SIDE) {
                    val scale = MAX_SIDE.toDouble() / longest
                    decoder.setTargetSize(max(1, (w * scale).roundToInt()), max(1, (h * scale).roundToInt()))
                }
            }.let { ensureArgb(it) }
        }
        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        context.contentResolver.openInputStream(uri).use { BitmapFactory.decodeStream(it, null, bounds) }
        var sample = 1
        while (max(bounds.outWidth, bounds.outHeight) / sample > MAX_SIDE) sample *= 2
        val options = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inSampleSize = sample
        }
        val bitmap = context.contentResolver.openInputStream(uri).use { BitmapFactory.decodeStream(it, null, options) }
            ?: throw IllegalArgumentException("cannot decode $uri")
        return ensureArgb(bitmap)
    }

    /**
     * A camera frame turned upright ([rotationDegrees] from the ImageProxy) and centre-cropped to the
     * model's aspect ratio ([width] : [height]), as the square viewfinder shows it.
     */
    fun uprightCenterCrop(frame: Bitmap, rotationDegrees: Int, width: Int, height: Int): Bitmap {
        val rotated = rotationDegrees % 180 != 0
        val uprightW = if (rotated) frame.height else frame.width
        val uprightH = if (rotated) frame.width else frame.height
        val target = width.toDouble() / height
        var cropW = uprightW
        var cropH = uprightH
        if (uprightW.toDouble() / uprightH > target) {
            cropW = max(1, (uprightH * target).roundToInt())
        } else {
            cropH = max(1, (uprightW / target).roundToInt())
        }
        // the crop in the frame's own (unrotated) coordinates
        val frameCropW = if (rotated) cropH else cropW
        val frameCropH = if (rotated) cropW else cropH
        val x = (frame.width - frameCropW) / 2
        val y = (frame.height - frameCropH) / 2
        val matrix = Matrix()
        matrix.postRotate(rotationDegrees.toFloat())
        return ensureArgb(Bitmap.createBitmap(frame, x, y, frameCropW, frameCropH, matrix, false))
    }

    private fun ensureArgb(bitmap: Bitmap): Bitmap =
        if (bitmap.config == Bitmap.Config.ARGB_8888) bitmap else bitmap.copy(Bitmap.Config.ARGB_8888, false)
}
