package dev.kerascnn.demo

import android.Manifest
import android.content.pm.PackageManager
import android.graphics.Bitmap
import android.net.Uri
import android.os.Bundle
import android.util.Log
import android.view.View
import android.widget.AdapterView
import android.widget.ArrayAdapter
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.core.content.ContextCompat
import dev.kerascnn.demo.databinding.ActivityMainBinding
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * Live camera (CameraX preview + analysis) or a photo from the gallery, classified by the exported
 * model with LiteRT: the top-3 classes with their scores and the inference time. The thread count
 * and the CPU (XNNPACK) / GPU delegate choice rebuild the interpreter.
 *
 * Everything that touches the [Classifier] runs on [worker], one thread, so the interpreter is never
 * used concurrently; the UI is updated with runOnUiThread.
 */
class MainActivity : AppCompatActivity() {
    private lateinit var binding: ActivityMainBinding
    private val worker: ExecutorService = Executors.newSingleThreadExecutor()

    // Only read and written on the worker thread.
    private var classifier: Classifier? = null

    @Volatile
    private var showingPhoto = false

    @Volatile
    private var threads = DEFAULT_THREADS

    @Volatile
    private var accelerator = Classifier.Accelerator.CPU_XNNPACK

    private var cameraProvider: ProcessCameraProvider? = null

    private val requestCamera = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else binding.resultsText.setText(R.string.camera_permission_denied)
    }

    private val pickPhoto = registerForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) classifyPhoto(uri)
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        binding = ActivityMainBinding.inflate(layoutInflater)
        setContentView(binding.root)

        setUpSettings()
        binding.galleryButton.setOnClickListener {
            pickPhoto.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly))
        }
        binding.cameraButton.setOnClickListener { showCamera() }

        rebuildClassifier()
        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            requestCamera.launch(Manifest.permission.CAMERA)
        }
    }

    override fun onDestroy() {
        super.onDestroy()
        cameraProvider?.unbindAll()
        worker.execute {
            classifier?.close()
            classifier = null
        }
        worker.shutdown()
    }

    private fun setUpSettings() {
        val choices = (1..MAX_THREADS).toList()
        binding.threadsSpinner.adapter =
            ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, choices)
        binding.threadsSpinner.setSelection(DEFAULT_THREADS - 1)
        binding.threadsSpinner.onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(parent: AdapterView<*>?, view: View?, position: Int, id: Long) {
                val chosen = choices[position]
                if (chosen != threads) {
                    threads = chosen
                    rebuildClassifier()
                }
            }

            override fun onNothingSelected(parent: AdapterView<*>?) = Unit
        }
        binding.delegateGroup.setOnCheckedChangeListener { _, checkedId ->
            val chosen = if (checkedId == R.id.delegateGpu) Classifier.Accelerator.GPU else Classifier.Accelerator.CPU_XNNPACK
            if (chosen != accelerator) {
                accelerator = chosen
                rebuildClassifier()
            }
        }
    }

    /** (Re)creates the interpreter with the current settings, on the worker thread. */
    private fun rebuildClassifier() {
        val wantedAccelerator = accelerator
        val wantedThreads = threads
        worker.execute {
            classifier?.close()
            classifier = null
            try {
                val created = Classifier.create(applicationContext, wantedAccelerator, wantedThreads)
                classifier = created
                // name and version from the model's standard TFLite Metadata (else kerascnn's metadata)
                val title = if (created.modelVersion.isNotEmpty()) {
                    getString(R.string.model_title, created.modelName, created.modelVersion)
                } else {
                    created.modelName
                }
                val info = getString(R.string.model_info, title, created.metadata.summary(), created.metadataOrigin)
                // the delegate that actually runs the model, and why not the GPU when it was asked for
                val running = getString(R.string.running_on, delegateName(created))
                val fallback = created.gpuFallbackReason
                runOnUiThread {
                    binding.statusText.text = info + "\n" + running +
                        (if (fallback != null) "\n" + getString(R.string.gpu_fallback, fallback) else "")
                    if (fallback != null) {
                        accelerator = Classifier.Accelerator.CPU_XNNPACK // so the radio change rebuilds nothing
                        binding.delegateCpu.isChecked = true
                    }
                }
            } catch (e: Throwable) {
                // also UnsatisfiedLinkError and the like from the native runtime: shown, not a crash
                Log.e(TAG, "cannot load the model", e)
                runOnUiThread { binding.statusText.text = e.message ?: e.toString() }
            }
        }
    }

    private fun startCamera() {
        val future = ProcessCameraProvider.getInstance(this)
        future.addListener({
            val provider = future.get()
            cameraProvider = provider
            val preview = Preview.Builder().build()
            preview.setSurfaceProvider(binding.previewView.surfaceProvider)
            val analysis = ImageAnalysis.Builder()
                .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                .build()
            analysis.setAnalyzer(worker) { image -> analyzeFrame(image) }
            try {
                provider.unbindAll()
                provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, preview, analysis)
            } catch (e: Exception) {
                Log.e(TAG, "cannot start the camera", e)
                binding.resultsText.text = e.message ?: e.toString()
            }
        }, ContextCompat.getMainExecutor(this))
    }

    /**
     * On the worker thread: one camera frame, unless a picked photo is being shown. Nothing may throw
     * out of here: an exception on a worker thread would end the app.
     */
    private fun analyzeFrame(image: ImageProxy) {
        val current = classifier
        if (showingPhoto || current == null) {
            image.close()
            return
        }
        try {
            val rotation = image.imageInfo.rotationDegrees
            val frame = try {
                image.toBitmap()
            } finally {
                image.close()
            }
            val meta = current.metadata
            val upright = Images.uprightCenterCrop(frame, rotation, meta.inputWidth, meta.inputHeight)
            classifyOnWorker(current, upright)
        } catch (e: Exception) {
            Log.e(TAG, "cannot classify a camera frame", e)
            runOnUiThread { binding.resultsText.text = e.message ?: e.toString() }
        }
    }

    private fun classifyPhoto(uri: Uri) {
        showingPhoto = true
        worker.execute {
            try {
                val bitmap = Images.decode(applicationContext, uri)
                runOnUiThread {
                    binding.photoView.setImageBitmap(bitmap)
                    binding.photoView.visibility = View.VISIBLE
                }
                val current = classifier
                if (current != null) classifyOnWorker(current, bitmap)
            } catch (e: Exception) {
                Log.e(TAG, "cannot classify $uri", e)
                runOnUiThread { binding.resultsText.text = e.message ?: e.toString() }
            }
        }
    }

    private fun showCamera() {
        showingPhoto = false
        binding.photoView.visibility = View.GONE
        binding.photoView.setImageDrawable(null)
        if (cameraProvider == null) {
            if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
                startCamera()
            } else {
                requestCamera.launch(Manifest.permission.CAMERA)
            }
        }
    }

    private fun classifyOnWorker(current: Classifier, bitmap: Bitmap) {
        val result = try {
            current.classify(bitmap)
        } catch (e: Exception) {
            Log.e(TAG, "inference failed", e)
            runOnUiThread { binding.resultsText.text = e.message ?: e.toString() }
            return
        }
        val lines = StringBuilder()
        for ((rank, r) in result.top.withIndex()) {
            if (rank > 0) lines.append('\n')
            lines.append(getString(R.string.result_row, rank + 1, r.label, r.score * 100f))
        }
        val timing = getString(R.string.timing, result.inferenceMs, result.preprocessMs, delegateName(current), current.threads)
        runOnUiThread {
            binding.resultsText.text = lines.toString()
            binding.timingText.text = timing
        }
    }

    private fun delegateName(current: Classifier): String = getString(
        if (current.accelerator == Classifier.Accelerator.GPU) R.string.delegate_gpu else R.string.delegate_cpu
    )

    companion object {
        private const val TAG = "KerascnnDemo"
        private const val MAX_THREADS = 8
        private const val DEFAULT_THREADS = 4
    }
}
