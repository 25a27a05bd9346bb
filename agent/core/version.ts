/** Recorded in manifests and history so every object says which tool wrote it. */
export const VERSION = '0.1.0';
export const TOOL = `cairn ${VERSION}`;
