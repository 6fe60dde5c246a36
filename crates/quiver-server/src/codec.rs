//! The protobuf codec of every generated service and client: prost's, except that a message
//! that cannot be decoded (malformed protobuf, a `string` that is not UTF-8) is
//! `INVALID_ARGUMENT`: the peer sent it, the server did not fail.

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Prost's codec with decode errors reported as `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct Codec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder::default()
    }
}

/// Prost's decoder with decode errors reported as `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct Decoder<U>(ProstDecoder<U>);

impl<U: Message + Default + Send + 'static> Default for Decoder<U> {
    fn default() -> Self {
        Self(tonic::codec::Codec::decoder(
            &mut ProstCodec::<(), U>::default(),
        ))
    }
}

impl<U: Message + Default> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| {
            Status::invalid_argument(format!(
                "malformed {} message: {}",
                std::any::type_name::<U>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("protobuf"),
                s.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
