import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import type { CompletedPart, S3Client } from '@aws-sdk/client-s3';
import { mapLimit } from '../core/concurrency.ts';

const MiB = 1 << 20;
/** S3's smallest part (all but the last) and its most parts per upload. */
export const MIN_PART_SIZE = 5 * MiB;
const MAX_PARTS = 10_000;

export interface MultipartUpload {
  client: S3Client;
  bucket: string;
  objectName: string;
  data: Buffer;
  /** Grown when the object would need more than 10,000 parts. */
  partSize: number;
  partConcurrency: number;
  /** `If-None-Match: *` on completion: the object appears only if the name was free. */
  ifAbsent: boolean;
}

/**
 * One object as an S3 multipart upload. A failed upload is aborted (best
 * effort: an incomplete upload is never an object, and a bucket lifecycle
 * rule removes leftovers). SDK errors pass through untranslated: the caller's
 * translation names the object.
 */
export async function uploadMultipart(upload: MultipartUpload): Promise<void> {
  const { client, bucket, objectName, data } = upload;
  const partSize = Math.max(upload.partSize, Math.ceil(data.length / MAX_PARTS));
  const partCount = Math.ceil(data.length / partSize);
  // CRC32 declared at creation, sent with every part and listed at completion: what S3 expects when parts carry checksums.
  const created = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: objectName, ChecksumAlgorithm: 'CRC32' }));
  const uploadId = created.UploadId;
  if (uploadId === undefined) throw new Error('CreateMultipartUpload returned no upload id');
  try {
    const parts: CompletedPart[] = new Array<CompletedPart>(partCount);
    await mapLimit(
      Array.from({ length: partCount }, (_, i) => i),
      upload.partConcurrency,
      async (i) => {
        const body = data.subarray(i * partSize, Math.min(data.length, (i + 1) * partSize));
        const out = await client.send(
          new UploadPartCommand({
            Bucket: bucket,
            Key: objectName,
            UploadId: uploadId,
            PartNumber: i + 1,
            Body: body,
            ContentLength: body.length,
            ChecksumAlgorithm: 'CRC32',
          }),
        );
        if (out.ETag === undefined) throw new Error(`UploadPart ${i + 1} of ${partCount} returned no ETag`);
        parts[i] = {
          PartNumber: i + 1,
          ETag: out.ETag,
          ...(out.ChecksumCRC32 !== undefined ? { ChecksumCRC32: out.ChecksumCRC32 } : {}),
        };
      },
    );
    await client.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: objectName,
        UploadId: uploadId,
        MultipartUpload: { Parts: parts },
        ...(upload.ifAbsent ? { IfNoneMatch: '*' } : {}),
      }),
    );
  } catch (error) {
    // mapLimit has let the parts in flight settle, so no part lands after the abort.
    await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: objectName, UploadId: uploadId })).catch(() => undefined);
    throw error;
  }
}
