//! [`Mmap`]: a `BPF_F_MMAPABLE` array mapped into this process's memory.

use std::{
    io,
    marker::PhantomData,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use aya::maps::{Map, MapData};

use super::{DataplaneError, Result};

/// A `BPF_F_MMAPABLE` array mapped into our address space as `len` elements of `T`. `T`'s size
/// must be a multiple of 8 (the kernel's element stride), so element `i` is at `i * size`.
pub(super) struct Mmap<T> {
    ptr: NonNull<T>,
    len: u32,
    bytes: usize,
    name: &'static str,
    _map: MapData,
    _t: PhantomData<T>,
}

// SAFETY: the mapping is owned by this struct and only accessed through `&self`/`&mut self`;
// `T` is plain data.
unsafe impl<T: Send> Send for Mmap<T> {}
// SAFETY: as above; concurrent readers see plain loads of memory the kernel also reads.
unsafe impl<T: Sync> Sync for Mmap<T> {}

impl<T: Copy> Mmap<T> {
    pub(super) fn new(map: Map, name: &'static str, len: u32) -> Result<Self> {
        assert_eq!(
            size_of::<T>() % 8,
            0,
            "{name}: element size must be a multiple of 8"
        );
        let Map::Array(data) = map else {
            return Err(DataplaneError::Missing(name));
        };
        let bytes = len as usize * size_of::<T>();
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: mapping a BPF array fd shared and read-write is how the kernel exposes
        // BPF_F_MMAPABLE arrays; the length matches the map's value area.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DataplaneError::Mmap {
                map: name,
                source: io::Error::last_os_error(),
            });
        }
        Ok(Self {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned a non-null pointer"),
            len,
            bytes,
            name,
            _map: data,
            _t: PhantomData,
        })
    }

    pub(super) fn ptr(&self, index: u32) -> Result<*mut T> {
        if index >= self.len {
            return Err(DataplaneError::OutOfRange {
                map: self.name,
                index,
            });
        }
        // SAFETY: index is within the mapping.
        Ok(unsafe { self.ptr.as_ptr().add(index as usize) })
    }

    pub(super) fn write(&mut self, index: u32, value: &T) -> Result<()> {
        let p = self.ptr(index)?;
        // SAFETY: `p` is within the mapping.
        unsafe { p.write_volatile(*value) };
        Ok(())
    }

    pub(super) fn read(&self, index: u32) -> Result<T> {
        let p = self.ptr(index)?;
        // SAFETY: `p` is within the mapping.
        Ok(unsafe { p.read_volatile() })
    }
}

impl<T> Drop for Mmap<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.bytes);
        }
    }
}
