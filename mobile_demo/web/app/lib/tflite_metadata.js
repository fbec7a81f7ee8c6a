// The standard TFLite Metadata (metadata_schema.fbs, file identifier M001) that MediaPipe Tasks, ML Kit
// and Android Studio read from a .tflite, and that `kerascnn export` (export/metadata.py::
// standard_metadata) and MediaPipe Model Maker write. Read in the browser (or node) from the model bytes:
//
//  - the TFLite flatbuffer's Model.metadata entry named TFLITE_METADATA points to the buffer holding the
//    metadata flatbuffer (lib/tflite.js);
//  - the files it names (labels.txt as the output tensor's TENSOR_AXIS_LABELS file, kerascnn's
//    metadata.json, ...) are packed in an uncompressed ZIP archive appended to the model (lib/zip.js);
//  - the input/output tensors' type, shape and quantization come from the TFLite flatbuffer itself.
//
// TABLES mirrors export/tflite_metadata.py (a field's slot is its position; a union takes two slots,
// <name>_type, then the value). Fields this reader does not know are skipped, as any FlatBuffers reader
// skips fields newer than its schema. decodeMetadata() gives the JSON of the schema's own displayer
// (flatc's): a union as `<name>_type` (member name) and `<name>`, enums by name, absent fields left out.
import { MetadataError } from "./errors.js";
import { Table } from "./flatbuf.js";
import { tfliteIO, tfliteMetadataBuffer, tfliteMetadataNames } from "./tflite.js";
import { packedFiles } from "./zip.js";

export const METADATA_NAME = "TFLITE_METADATA";
export const FILE_IDENTIFIER = "M001";

const ENUMS = {
  AssociatedFileType: ["UNKNOWN", "DESCRIPTIONS", "TENSOR_AXIS_LABELS", "TENSOR_VALUE_LABELS", "TENSOR_AXIS_SCORE_CALIBRATION", "VOCABULARY", "SCANN_INDEX_FILE"],
  ColorSpaceType: ["UNKNOWN", "RGB", "GRAYSCALE"],
  BoundingBoxType: ["UNKNOWN", "BOUNDARIES", "UPPER_LEFT", "CENTER"],
  CoordinateType: ["RATIO", "PIXEL"],
  ScoreTransformationType: ["IDENTITY", "LOG", "INVERSE_LOGISTIC"],
};

// unions: member tables in declaration order (type value = index + 1; 0 is NONE)
const UNIONS = {
  ContentProperties: ["FeatureProperties", "ImageProperties", "BoundingBoxProperties", "AudioProperties"],
  ProcessUnitOptions: ["NormalizationOptions", "ScoreCalibrationOptions", "ScoreThresholdingOptions", "BertTokenizerOptions", "SentencePieceTokenizerOptions", "RegexTokenizerOptions"],
};

// tables: [field, kind] in schema order. kinds: str, [str], [float], [uint], a scalar (byte, ubyte, int,
// uint, float), enum:<Enum>:<scalar>, a table name, [table name], union:<Union> (the slot before it is
// the union's type).
const TABLES = {
  ModelMetadata: [["name", "str"], ["description", "str"], ["version", "str"], ["subgraph_metadata", "[SubGraphMetadata]"], ["author", "str"], ["license", "str"], ["associated_files", "[AssociatedFile]"], ["min_parser_version", "str"]],
  SubGraphMetadata: [["name", "str"], ["description", "str"], ["input_tensor_metadata", "[TensorMetadata]"], ["output_tensor_metadata", "[TensorMetadata]"], ["associated_files", "[AssociatedFile]"], ["input_process_units", "[ProcessUnit]"], ["output_process_units", "[ProcessUnit]"]],
  TensorMetadata: [["name", "str"], ["description", "str"], ["dimension_names", "[str]"], ["content", "Content"], ["process_units", "[ProcessUnit]"], ["stats", "Stats"], ["associated_files", "[AssociatedFile]"]],
  Content: [["content_properties_type", "ubyte"], ["content_properties", "union:ContentProperties"], ["range", "ValueRange"]],
  FeatureProperties: [],
  ImageProperties: [["color_space", "enum:ColorSpaceType:byte"], ["default_size", "ImageSize"]],
  ImageSize: [["width", "uint"], ["height", "uint"]],
  BoundingBoxProperties: [["index", "[uint]"], ["type", "enum:BoundingBoxType:byte"], ["coordinate_type", "enum:CoordinateType:byte"]],
  AudioProperties: [["sample_rate", "uint"], ["channels", "uint"]],
  ValueRange: [["min", "int"], ["max", "int"]],
  ProcessUnit: [["options_type", "ubyte"], ["options", "union:ProcessUnitOptions"]],
  NormalizationOptions: [["mean", "[float]"], ["std", "[float]"]],
  ScoreCalibrationOptions: [["score_transformation", "enum:ScoreTransformationType:byte"], ["default_score", "float"]],
  ScoreThresholdingOptions: [["global_score_threshold", "float"]],
  BertTokenizerOptions: [["vocab_file", "[AssociatedFile]"]],
  SentencePieceTokenizerOptions: [["sentencePiece_model", "[AssociatedFile]"], ["vocab_file", "[AssociatedFile]"]],
  RegexTokenizerOptions: [["delim_regex_pattern", "str"], ["vocab_file", "[AssociatedFile]"]],
  Stats: [["max", "[float]"], ["min", "[float]"]],
  AssociatedFile: [["name", "str"], ["description", "str"], ["type", "enum:AssociatedFileType:byte"], ["locale", "str"], ["version", "str"]],
};

function decodeTable(table, type) {
  const out = {};
  TABLES[type].forEach(([name, kind], slot) => {
    if (!table.has(slot)) return;
    if (kind === "str") out[name] = table.string(slot);
    else if (kind === "[str]") out[name] = table.strings(slot);
    else if (kind === "[float]") out[name] = table.scalars(slot, "float");
    else if (kind === "[uint]") out[name] = table.scalars(slot, "uint");
    else if (kind.startsWith("union:")) {
      const members = UNIONS[kind.slice(6)];
      const member = members[table.scalar(slot - 1, "ubyte") - 1];
      if (member) {
        out[`${name}_type`] = member;
        out[name] = decodeTable(table.table(slot), member);
      }
    } else if (kind.startsWith("enum:")) {
      const [, names, scalar] = kind.split(":");
      const value = table.scalar(slot, scalar);
      out[name] = ENUMS[names][value] ?? value;
    } else if (kind.startsWith("[")) out[name] = table.tables(slot).map((t) => decodeTable(t, kind.slice(1, -1)));
    else if (kind in TABLES) out[name] = decodeTable(table.table(slot), kind);
    else if (!name.endsWith("_type")) out[name] = table.scalar(slot, kind);
  });
  return out;
}

/** The metadata flatbuffer (bytes of the TFLITE_METADATA buffer) -> ModelMetadata in flatc's JSON form. */
export function decodeMetadata(buffer) {
  if (buffer.length < 8 || String.fromCharCode(...buffer.subarray(4, 8)) !== FILE_IDENTIFIER) {
    throw new MetadataError(`not a TFLite Metadata buffer (file identifier ${FILE_IDENTIFIER} missing)`);
  }
  return decodeTable(Table.root(buffer, FILE_IDENTIFIER), "ModelMetadata");
}

/** labels.txt: one label per line, in class-index order (blank lines skipped, like read_labels_text). */
export function parseLabels(text) {
  return text
    .split(/\r\n|\n|\r/)
    .filter((line) => line.trim() !== "")
    .map((line) => line.replace(/[\r\n]+$/, ""));
}

const where_ = (where, message) => new MetadataError(`${where}: ${message}`);

/**
 * The standard TFLite Metadata of a .tflite (Uint8Array), as the page uses it, or null when the model
 * has no TFLITE_METADATA entry:
 *
 *   {metadata (all of it, flatc's JSON form), packedFiles: [names], files: Map name -> bytes,
 *    name, description, version, author, minParserVersion,
 *    input:  {name, colorSpace, defaultSize: {width, height} | null, mean, std, stats: {min, max} | null,
 *             tensor: {name, type, shape, signature, quantization}},
 *    output: {name, kind: "probabilities" | "logits", stats, labelsFile, labels, tensor}}
 *
 * mean/std are the NormalizationOptions in pixel units (null when the model has none); the tensors'
 * dtypes, shapes and quantization come from the TFLite flatbuffer. Throws MetadataError (naming `where`)
 * for a file that is not a complete TFLite model, a malformed metadata buffer, or a labels file the
 * metadata names but the file does not pack. With {required: true}, a model without TFLITE_METADATA is a
 * MetadataError too (naming the Model.metadata entries it has).
 */
export function readStandardMetadata(bytes, where = "model", { required = false } = {}) {
  let buffer;
  let io;
  let files;
  let metadata;
  try {
    buffer = tfliteMetadataBuffer(bytes, METADATA_NAME);
    if (!buffer && required) {
      const names = tfliteMetadataNames(bytes);
      throw new MetadataError(`no TFLite Metadata: Model.metadata has no ${METADATA_NAME} entry (it has ${names.length ? names.join(", ") : "none"})`);
    }
    if (!buffer) return null;
    metadata = decodeMetadata(buffer);
    io = tfliteIO(bytes);
    files = packedFiles(bytes);
  } catch (e) {
    if (e instanceof MetadataError) throw where_(where, e.message);
    throw e;
  }
  const subgraph = metadata.subgraph_metadata?.[0];
  const image = subgraph?.input_tensor_metadata?.[0];
  const scores = subgraph?.output_tensor_metadata?.[0];
  if (!image || !scores) throw where_(where, "its TFLite Metadata describes no input and output tensor");
  if (!io.inputs.length || !io.outputs.length) throw where_(where, "the TFLite model has no input or output tensor");
  const properties = image.content?.content_properties_type === "ImageProperties" ? image.content.content_properties : {};
  const norm = (image.process_units ?? []).find((u) => u.options_type === "NormalizationOptions")?.options ?? {};
  const labelsFile = (scores.associated_files ?? []).find((f) => f.type === "TENSOR_AXIS_LABELS")?.name ?? null;
  let labels = null;
  if (labelsFile !== null) {
    if (!files.has(labelsFile)) throw where_(where, `its TFLite Metadata names the labels file ${labelsFile} (TENSOR_AXIS_LABELS), but the file packs no ${labelsFile}`);
    if (files.get(labelsFile) === null) throw where_(where, `the packed ${labelsFile} is compressed; TFLite Metadata files are stored uncompressed`);
    try {
      labels = parseLabels(new TextDecoder("utf-8", { fatal: true }).decode(files.get(labelsFile)));
    } catch {
      throw where_(where, `the packed ${labelsFile} is not UTF-8 text`);
    }
  }
  const stats = (s) => (s ? { min: s.min ?? [], max: s.max ?? [] } : null);
  const size = properties.default_size;
  return {
    metadata,
    packedFiles: [...files.keys()],
    files,
    name: metadata.name ?? null,
    description: metadata.description ?? null,
    version: metadata.version ?? null,
    author: metadata.author ?? null,
    minParserVersion: metadata.min_parser_version ?? null,
    input: {
      name: image.name ?? null,
      colorSpace: typeof properties.color_space === "string" ? properties.color_space : "UNKNOWN",
      defaultSize: size ? { width: size.width ?? 0, height: size.height ?? 0 } : null,
      mean: norm.mean ?? null,
      std: norm.std ?? null,
      stats: stats(image.stats),
      tensor: io.inputs[0],
    },
    output: {
      name: scores.name ?? null,
      // export/metadata.py names it "probability" or "logits"; MediaPipe Model Maker "probability".
      kind: /logit/i.test(scores.name ?? "") ? "logits" : "probabilities",
      stats: stats(scores.stats),
      labelsFile,
      labels,
      tensor: io.outputs[0],
    },
  };
}

/**
 * kerascnn's view of a model with the standard metadata (what export/metadata.py::from_standard_metadata
 * builds for a file without metadata.json): the object lib/metadata.js::checkMetadata completes. The
 * input size and channels come from the input tensor's shape [1, H, W, C] (default_size where H or W is
 * dynamic), the channel order from the color space, normalization [0] / [1] when the model has none;
 * model_name, model_version and labels only when the metadata has them.
 */
export function metaFromStandard(info, where = "model") {
  const { input, output } = info;
  const shape = input.tensor.shape;
  if (shape.length !== 4) throw where_(where, `the input tensor has shape [${shape}]; an image classifier takes [1, H, W, C]`);
  let [, H, W, C] = shape;
  if (!(H > 0) || !(W > 0)) {
    if (!input.defaultSize) throw where_(where, `the input tensor's size is dynamic ([${shape}]) and the TFLite Metadata gives no default_size`);
    [H, W] = [input.defaultSize.height, input.defaultSize.width];
  }
  const byColor = { RGB: 3, GRAYSCALE: 1 }[input.colorSpace];
  if (byColor && byColor !== C) {
    throw where_(where, `the TFLite Metadata says color space ${input.colorSpace} but the input tensor has ${C} channel(s)`);
  }
  const meta = {
    input_size: [H, W],
    channels: C,
    mean: input.mean?.length ? input.mean : [0],
    std: input.std?.length ? input.std : [1],
    channel_order: C === 1 ? "GRAY" : "RGB",
    layout: "NHWC",
    output: output.kind,
    format: "tflite",
    input_dtype: input.tensor.type,
    output_dtype: output.tensor.type,
    input_quantization: input.tensor.quantization,
    output_quantization: output.tensor.quantization,
  };
  if (info.name) meta.model_name = info.name;
  if (info.version) meta.model_version = info.version;
  if (output.labels) meta.labels = output.labels;
  return meta;
}
