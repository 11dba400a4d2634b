import { DescribeImagesCommand, DescribeInstanceTypesCommand, type EC2Client } from "@aws-sdk/client-ec2";
import { GetParameterCommand, type SSMClient } from "@aws-sdk/client-ssm";
import { RunctlError } from "../../errors/runctl-error.js";
import { awsErrorCode } from "../../aws/aws-errors.js";
import { awsCall } from "../../aws/aws-call.js";

/** What runctl needs to know about an instance type. */
export interface InstanceTypeFacts {
  readonly instanceType: string;
  /** `x86_64` or `arm64`. */
  readonly architecture: "x86_64" | "arm64";
  readonly gpus: number;
  readonly vcpus: number;
}

/** The image an instance boots from. */
export interface MachineImage {
  readonly imageId: string;
  /** The root device name from the image itself (not assumed: Ubuntu `/dev/sda1`, Amazon Linux `/dev/xvda`). */
  readonly rootDeviceName: string;
  /** Where the id came from: `explicit` or the SSM parameter name. */
  readonly source: string;
}

/**
 * AWS's public SSM parameters that always name the newest image: the Deep Learning Base AMI
 * (NVIDIA driver, CUDA, Python, AWS CLI, SSM agent) for GPU types, Canonical's Ubuntu 22.04 otherwise.
 */
export function publicAmiParameter(facts: Pick<InstanceTypeFacts, "architecture" | "gpus">): string {
  if (facts.gpus > 0) return `/aws/service/deeplearning/ami/${facts.architecture}/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id`;
  return `/aws/service/canonical/ubuntu/server/22.04/stable/current/${facts.architecture === "arm64" ? "arm64" : "amd64"}/hvm/ebs-gp2/ami-id`;
}

/** DescribeInstanceTypes: architecture and GPUs; an unknown type is INVALID_ARGUMENT. */
export async function describeInstanceType(ec2: EC2Client, instanceType: string, signal?: AbortSignal): Promise<InstanceTypeFacts> {
  let out;
  try {
    out = await awsCall("DescribeInstanceTypes", (http) => ec2.send(new DescribeInstanceTypesCommand({ InstanceTypes: [instanceType as never] }), http), { signal: signal });
  } catch (err) {
    const code = awsErrorCode((err as { cause?: unknown }).cause);
    if (code === "InvalidInstanceType") throw new RunctlError("INVALID_ARGUMENT", `ec2(): ${instanceType} is not an instance type in this region.`, { cause: err });
    throw err;
  }
  const info = out.InstanceTypes?.[0];
  if (!info) throw new RunctlError("INVALID_ARGUMENT", `ec2(): ${instanceType} is not an instance type in this region.`);
  const archs = info.ProcessorInfo?.SupportedArchitectures ?? [];
  const architecture = archs.includes("x86_64") ? "x86_64" : archs.includes("arm64") ? "arm64" : undefined;
  if (!architecture) throw new RunctlError("UNSUPPORTED", `ec2(): ${instanceType} runs on ${archs.join(", ") || "an unknown architecture"}; runctl supports x86_64 and arm64.`);
  const gpus = (info.GpuInfo?.Gpus ?? []).reduce((n, g) => n + (g.Count ?? 0), 0);
  return { instanceType, architecture, gpus, vcpus: info.VCpuInfo?.DefaultVCpus ?? 0 };
}

/**
 * The image to launch: the explicit id, or the newest public one for the type (an SSM parameter),
 * with its root device name read from DescribeImages.
 */
export async function resolveMachineImage(clients: { readonly ec2: EC2Client; readonly ssm: SSMClient }, facts: InstanceTypeFacts, explicit: string | undefined, signal?: AbortSignal): Promise<MachineImage> {
  let imageId = explicit;
  let source = "explicit";
  if (imageId === undefined) {
    source = publicAmiParameter(facts);
    const name = source;
    const param = await awsCall("GetParameter", (http) => clients.ssm.send(new GetParameterCommand({ Name: name }), http), { signal: signal }).catch((err: unknown) => {
      throw new RunctlError("CLOUD_ERROR", `Could not resolve the default AMI from ${name}: ${(err as Error).message}. Pass ec2({ ami }) instead.`, { cause: err });
    });
    imageId = param.Parameter?.Value;
    if (!imageId || !/^ami-[0-9a-f]+$/.test(imageId)) throw new RunctlError("CLOUD_ERROR", `SSM parameter ${name} holds no AMI id.`);
  }
  const id = imageId;
  const images = await awsCall("DescribeImages", (http) => clients.ec2.send(new DescribeImagesCommand({ ImageIds: [id] }), http), { signal: signal }).catch((err: unknown) => {
    if (awsErrorCode((err as { cause?: unknown }).cause)?.startsWith("InvalidAMIID")) throw new RunctlError("INVALID_ARGUMENT", `ec2(): AMI ${id} does not exist in this region or is not visible to you.`, { cause: err });
    throw err;
  });
  const image = images.Images?.[0];
  if (!image) throw new RunctlError("INVALID_ARGUMENT", `ec2(): AMI ${id} does not exist in this region or is not visible to you.`);
  if (image.Architecture && image.Architecture !== facts.architecture) {
    throw new RunctlError("INVALID_ARGUMENT", `ec2(): AMI ${id} is for ${image.Architecture}, but ${facts.instanceType} is ${facts.architecture}.`);
  }
  if (!image.RootDeviceName) throw new RunctlError("CLOUD_ERROR", `AMI ${id} has no root device name.`);
  return { imageId: id, rootDeviceName: image.RootDeviceName, source };
}
