// The error the page shows when a model file's metadata is missing, malformed or inconsistent (its
// message names the file and the field). Shared by the readers in this folder.
export class MetadataError extends Error {
  get name() {
    return "MetadataError";
  }
}
