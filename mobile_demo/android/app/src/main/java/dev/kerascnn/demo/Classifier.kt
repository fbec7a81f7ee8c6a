package dev.kerascnn.demo

import android.content.Context
import android.graphics.Bitmap
import android.os.SystemClock
import dev.kerascnn.core.GpuCompatibility
import dev.kerascnn.core.MetadataException
import dev.kerascnn.core.MetadataResolver
import dev.kerascnn.core.ModelMetadata
import dev.kerascnn.core.Postprocess
import dev.kerascnn.core.Preprocess
import dev.kerascnn.core.QuantParams
import dev.kerascnn.core.Recognition
import dev.kerascnn.core.ResolvedMetadata
import dev.kerascnn.core.StandardMetadata
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.gpu.CompatibilityList
import org.tensorflow.lite.gpu.GpuDelegate
import java.io.Closeable
import java.io.FileInputStream
import java.io.FileNotFoundException
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel

/**
 * The LiteRT [Interpreter] for the asset `model.tflite` plus the core module's preprocessing and
 * postprocessing. The labels, normalization, input size and tensor types come from the model itself
 * (core's `ModelConfig`: the standard TFLite Metadata, plus kerascnn's packed metadata.json when it is
 * there), else from the sidecar assets model.json and labels.txt. Not thread-safe: create, use and
 * close it on one thread (MainActivity's executor).
 */
class Classifier private constructor(
    private val interpreter: Interpreter,
    private val gpuDelegate: GpuDelegate?,
    private val resolved: ResolvedMetadata,
    val metadata: ModelMetadata,
    /** Where the metadata came from, e.g. "TFLite Metadata + metadata.json, embedded in model.tflite". */
    val metadataOrigin: String,
    /** The delegate that runs the model (CPU_XNNPACK when the GPU was asked for and not used). */
    val accelerator: Accelerator,
    val threads: Int,
    /**
     * Why the GPU was asked for and the CPU (XNNPACK) runs the model instead; null otherwise. The GPU
     * delegate would not take every op of this model (core's GpuCompatibility: the rest would silently
     * run on the CPU), the device has no GPU the delegate supports, or the delegate threw on this model.
     */
    val gpuFallbackReason: String?,
    /** The output tensor as the interpreter reports it (dtype and quantization). */
    private val outputMetadata: ModelMetadata
) : Closeable {

    enum class Accelerator { CPU_XNNPACK, GPU }

    /** Set when the GPU was asked for but the CPU runs the model ([gpuFallbackReason] says why). */
    val gpuUnavailable: Boolean get() = gpuFallbackReason != null

    /** The model's name: its standard TFLite Metadata's, else kerascnn's model_name. */
    val modelName: String get() = resolved.name

    /** The model's version from its metadata ("" when it has none). */
    val modelVersion: String get() = resolved.version

    /** The model's standard TFLite Metadata (null when the app uses the sidecar assets or metadata.json alone). */
    val standardMetadata: StandardMetadata? get() = resolved.config?.standard

    class Result(
        val top: List<Recognition>,
        val inferenceMs: Double,
        val preprocessMs: Double
    )

    /** The top-[k] classes for a bitmap (any size; resized as `kerascnn validate` does). */
    fun classify(bitmap: Bitmap, k: Int = 3): Result {
        val width = bitmap.width
        val height = bitmap.height
        val pixels = IntArray(width * height)
        bitmap.getPixels(pixels, 0, width, 0, 0, width, height)

        val t0 = SystemClock.elapsedRealtimeNanos()
        val input = Preprocess.prepare(pixels, width, height, metadata).toDirectBuffer()
        val output = ByteBuffer.allocateDirect(interpreter.getOutputTensor(0).numBytes())
            .order(ByteOrder.nativeOrder())
        val t1 = SystemClock.elapsedRealtimeNanos()
        interpreter.run(input, output)
        val t2 = SystemClock.elapsedRealtimeNanos()

        output.rewind()
        val raw = ByteArray(output.remaining())
        output.get(raw)
        // Postprocess reads float32 little-endian, the byte order of every Android ABI.
        val scores = Postprocess.scores(raw, outputMetadata)
        return Result(Postprocess.topK(scores, metadata.labels, k), (t2 - t1) / 1e6, (t1 - t0) / 1e6)
    }

    override fun close() {
        interpreter.close()
        gpuDelegate?.close()
    }

    companion object {
        const val MODEL_ASSET = "model.tflite"
        const val METADATA_ASSET = "model.json"
        const val LABELS_ASSET = "labels.txt"

        fun create(context: Context, accelerator: Accelerator, threads: Int): Classifier {
            val model = mapAsset(context, MODEL_ASSET)
            // The model's own metadata first (standard TFLite Metadata + metadata.json); the sidecar
            // assets only for a model without any. A damaged or inconsistent model is an error.
            val resolved = MetadataResolver.resolve(
                model,
                readAssetText(context, METADATA_ASSET),
                readAssetText(context, LABELS_ASSET)
            )
            val metadata = resolved.metadata

            val options = Interpreter.Options().setNumThreads(threads)
            var gpu: GpuDelegate? = null
            var gpuFallbackReason: String? = null
            if (accelerator == Accelerator.GPU) {
                // Only a model the GPU delegate takes whole; a partly delegated one runs the rest on the CPU.
                gpuFallbackReason = notFullyOnGpu(model)
                if (gpuFallbackReason == null) {
                    val compatibility = CompatibilityList()
                    try {
                        if (compatibility.isDelegateSupportedOnThisDevice) {
                            gpu = GpuDelegate(compatibility.bestOptionsForThisDevice)
                            options.addDelegate(gpu)
                        } else {
                            gpuFallbackReason = "the GPU delegate is not supported on this device"
                        }
                    } finally {
                        compatibility.close()
                    }
                }
            }
            if (gpu == null) options.setUseXNNPACK(true)

            val interpreter = try {
                Interpreter(model, options)
            } catch (e: Exception) {
                val failedGpu = gpu ?: throw e
                // The GPU delegate rejected this model (an op or a type it cannot run): use the CPU.
                failedGpu.close()
                gpu = null
                gpuFallbackReason = "the GPU delegate failed on this model (${e.message ?: e.javaClass.simpleName})"
                Interpreter(model, Interpreter.Options().setNumThreads(threads).setUseXNNPACK(true))
            }
            try {
                val outputMetadata = checkTensors(interpreter, metadata)
                return Classifier(
                    interpreter, gpu, resolved, metadata, resolved.describe(),
                    if (gpu != null) Accelerator.GPU else Accelerator.CPU_XNNPACK,
                    threads, gpuFallbackReason, outputMetadata
                )
            } catch (e: Exception) {
                interpreter.close()
                gpu?.close()
                throw e
            }
        }

        /** Null when the GPU delegate would take every op of [model] (core's static check), else why not. */
        private fun notFullyOnGpu(model: ByteBuffer): String? = try {
            val report = GpuCompatibility.check(model, MODEL_ASSET)
            if (report.fullyTaken) null else report.describe()
        } catch (e: MetadataException) {
            "cannot read the model's operators (${e.message})"
        }

        private fun dtypeName(type: DataType): String = when (type) {
            DataType.FLOAT32 -> "float32"
            DataType.INT8 -> "int8"
            DataType.UINT8 -> "uint8"
            else -> type.toString()
        }

        /**
         * The model's tensors must be what its metadata says: input [1, H, W, C] of input_dtype (the
         * core already read them from the flatbuffer; this checks what the interpreter sees, and the
         * sidecar model.json). The output's dtype and quantization are taken from the tensor itself.
         */
        private fun checkTensors(interpreter: Interpreter, metadata: ModelMetadata): ModelMetadata {
            val input = interpreter.getInputTensor(0)
            val expectedShape = intArrayOf(1, metadata.inputHeight, metadata.inputWidth, metadata.channels)
            if (!input.shape().contentEquals(expectedShape)) {
                throw MetadataException(
                    "model.tflite's input is ${input.shape().contentToString()}, its metadata says " +
                        expectedShape.contentToString()
                )
            }
            val inputType = dtypeName(input.dataType())
            if (inputType != metadata.inputDtype) {
                throw MetadataException("model.tflite's input is $inputType, its metadata says ${metadata.inputDtype}")
            }
            val output = interpreter.getOutputTensor(0)
            val outputType = dtypeName(output.dataType())
            if (outputType != "float32" && outputType != "int8" && outputType != "uint8") {
                throw MetadataException("unsupported output tensor type $outputType")
            }
            val quant = if (outputType == "float32") {
                null
            } else {
                val q = output.quantizationParams()
                QuantParams(q.scale.toDouble(), q.zeroPoint)
            }
            return metadata.copy(outputDtype = outputType, outputQuantization = quant)
        }

        /** The asset memory-mapped (it is stored uncompressed: noCompress "tflite"). */
        private fun mapAsset(context: Context, name: String): MappedByteBuffer {
            val descriptor = try {
                context.assets.openFd(name)
            } catch (e: FileNotFoundException) {
                throw MetadataException(
                    "no $name in the app's assets: install one with " +
                        "kerascnn export RUN --quantize int8 --android mobile_demo/android",
                    e
                )
            }
            // The mapping stays valid after the descriptor and the channel are closed.
            return descriptor.use { fd ->
                FileInputStream(fd.fileDescriptor).use { stream ->
                    stream.channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
                }
            }
        }

        private fun readAssetText(context: Context, name: String): String? = try {
            context.assets.open(name).use { String(it.readBytes(), Charsets.UTF_8) }
        } catch (e: FileNotFoundException) {
            null
        }
    }
}
