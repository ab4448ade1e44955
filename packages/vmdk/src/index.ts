/**
 * `@ivmr/vmdk`: the files a hypervisor needs to run a VM from a backup. Synthesizes VMDK
 * descriptors (ESXi `vmfs`, hosted `monolithicFlat`) and `.vmx` files from a restore point's
 * metadata, presents a disk's block source as its `-flat.vmdk` extent, parses descriptors and
 * `.vmx` files written by VMware and qemu, and reads sparse VMDKs (monolithicSparse,
 * streamOptimized) and multi-extent VMDKs as block sources.
 *
 * @packageDocumentation
 */
export {
  BUS_LIMITS,
  type BusLimits,
  controllerBus,
  controllerMinHardwareVersion,
  DEFAULT_HARDWARE_VERSION,
  type DiskBus,
  SCSI_CONTROLLERS,
} from './controllers.js';
export {
  type DiskGeometry,
  diskGeometry,
  type GeometryBus,
  IDE_MAX_CYLINDERS,
} from './descriptor/geometry.js';
export { type DiskIdentity, type DiskIds, deriveDiskIds } from './descriptor/ids.js';
export {
  CREATE_TYPES,
  descriptorSize,
  EXTENT_TYPES,
  type ExtentAccess,
  type ExtentType,
  MAX_SECTORS,
  NO_PARENT_CID,
  SECTOR,
  type VmdkDescriptor,
  type VmdkExtent,
} from './descriptor/model.js';
export {
  MAX_DESCRIPTOR_BYTES,
  type ParseDescriptorOptions,
  parseDescriptor,
} from './descriptor/parse.js';
export {
  type AdapterType,
  adapterTypeFor,
  type DescriptorTarget,
  type DiskFileNames,
  diskFileNames,
  type SynthesizeDescriptorOptions,
  synthesizeDescriptor,
  writeDescriptor,
} from './descriptor/synthesize.js';
export { formatDescriptor } from './descriptor/write.js';
export { type AllocationInfo, FlatExtent, type WritableBlockSource } from './flat-extent.js';
export {
  type PointDiskFiles,
  type PointFiles,
  type PointFilesOptions,
  synthesizePointFiles,
} from './point-files.js';
export { type ChainPart, ExtentChain } from './source/extent-chain.js';
export { type OpenedVmdk, type OpenVmdkOptions, openVmdk } from './source/open-vmdk.js';
export type { SparseHeader } from './sparse/header.js';
export { SparseVmdk, type SparseVmdkOptions } from './sparse/sparse-vmdk.js';
export { escapeVmxValue, unescapeVmxValue } from './vmx/escape.js';
export { type ParsedVmx, type ParseVmxOptions, parseVmx, type VmxDisk } from './vmx/parse.js';
export { type DiskSlot, diskSlots, type SynthesizeVmxOptions, synthesizeVmx } from './vmx/write.js';
